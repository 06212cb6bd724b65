"""The DP clipping benchmark runs end to end: both formulations checked equal, then timed."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import dp_clipping  # noqa: E402


def test_both_formulations_agree_and_are_timed(capsys):
    assert dp_clipping.main(["--defenses=dp", "--batch=2", "--repeats=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["formulation"] for r in records] == ["privatize", "weighted-loss"]
    assert all(r["median_seconds"] > 0 and r["batch"] == 2 for r in records)
    assert lines[-1].startswith("privatize / weighted-loss: ")


def test_a_stack_without_dp_is_refused(capsys):
    assert dp_clipping.main(["--defenses=cvb"]) == 2
    assert "must include dp" in capsys.readouterr().out
