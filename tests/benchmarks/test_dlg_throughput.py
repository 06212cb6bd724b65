import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import dlg_throughput  # noqa: E402


def test_benchmark_runs_and_reports_each_implementation(capsys):
    # The smallest run: 1 victim at 8x8 on a one-conv LeNet (the loop reuses the
    # vmapped chunk's compilation), one L-BFGS step, PyTorch left out (its first-loss
    # check against jgi runs whenever the benchmark runs with torch).
    rc = dlg_throughput.main(["--victims=1", "--steps=1", "--image-size=8", "--repeats=1",
                              "--channels=4", "--strides=2", "--no-torch", "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["impl"] for r in rows] == ["jgi-vmap", "jgi-loop"]
    for r in rows:
        # One step is up to 20 evaluations per victim (PyTorch's max_iter), at least 1.
        assert r["victim_steps_per_s"] > 0
        steps = r["victim_steps_per_s"]
        assert steps * (1 - 1e-9) <= r["evals_per_s"] <= 20 * steps * (1 + 1e-9)
