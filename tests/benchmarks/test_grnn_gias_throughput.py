import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import grnn_gias_throughput  # noqa: E402


def test_benchmark_runs_and_reports_each_step_and_implementation(capsys):
    # The smallest run: 1 victim (the loop reuses the vmapped chunk's compilation), one
    # step, a one-conv LeNet, generators of width 2 and latent 4; only GIAS's parameter
    # step (the other two are compiled by tests/attacks/test_grnn.py and test_gias.py
    # through the same runner chunk; all three took 80 s on the loaded 2-core machine).
    rc = grnn_gias_throughput.main(["--victims=1", "--steps=1", "--repeats=1", "--batch=1",
                                    "--channels=4", "--width=2", "--latent=4",
                                    "--only=gias-params", "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["step"], r["impl"]) for r in rows] == [("gias-params", "jgi-vmap"),
                                                       ("gias-params", "jgi-loop")]
    for r in rows:
        assert r["victim_steps_per_s"] > 0 and r["first_call_s"] > 0
