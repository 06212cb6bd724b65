import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gradinversion_throughput  # noqa: E402


def test_benchmark_runs_and_reports_both_implementations(capsys):
    # The smallest run: 1 victim, batch 2, one group, a width-2 BN CNN at 8x8, one step
    # (the loop reuses the vmapped chunk's compilation at one victim).
    rc = gradinversion_throughput.main(["--victims=1", "--batch=2", "--groups=1",
                                        "--steps=1", "--image-size=8", "--width=2",
                                        "--repeats=1", "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["impl"] for r in rows] == ["jgi-vmap", "jgi-loop"]
    assert all(r["victim_steps_per_s"] > 0 and r["first_call_s"] > 0 for r in rows)
