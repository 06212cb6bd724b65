import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import highres_throughput  # noqa: E402


def test_benchmark_runs_and_reports_both_implementations(capsys):
    # The smallest run: one victim at 8x8 (the loop reuses the vmapped chunk's
    # compilation), one L-BFGS step, one repeat.
    rc = highres_throughput.main(["--resolutions=8", "--victims=1", "--steps=1",
                                  "--repeats=1", "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["impl"] for r in rows] == ["jgi-vmap", "jgi-loop"]
    for r in rows:
        # One step is 1..20 evaluations per victim (PyTorch's max_iter 20).
        steps = r["victim_steps_per_s"]
        assert steps > 0 and steps * (1 - 1e-9) <= r["evals_per_s"] <= 20 * steps * (1 + 1e-9)
        assert r["variables"] == 8 * 8 * 3


def test_benchmark_refuses_bad_arguments(capsys):
    assert highres_throughput.main(["--resolutions=4"]) == 2
    assert "resolutions must be sides >= 8" in capsys.readouterr().out
