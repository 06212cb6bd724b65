"""The multi-step benchmark runs both attacks, vmapped and looped, in one run."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import multistep_throughput  # noqa: E402


def test_one_run_times_both_attacks_vmapped_and_looped(capsys):
    # One victim: the loop reuses the vmapped chunk, one compilation per attack.
    records = multistep_throughput.main(["--victims=1", "--samples=2",
                                         "--batch=1", "--width=8", "--shape=8x8x1",
                                         "--epochs=1", "--iters=1", "--repeats=1",
                                         "--json"])
    assert sorted((r["attack"], r["impl"]) for r in records) == [
        ("dlf", "jgi-loop"), ("dlf", "jgi-vmap"),
        ("multistep", "jgi-loop"), ("multistep", "jgi-vmap")]
    for r in records:
        assert r["victim_iters_per_s"] > 0 and r["compile_s"] > 0 and r["local_steps"] == 2
    assert len(capsys.readouterr().out.splitlines()) == 4  # one JSON line each


def test_unknown_attacks_are_refused(capsys):
    with pytest.raises(SystemExit):
        multistep_throughput.main(["--attacks=dlg"])
    assert "valid: multistep, dlf" in capsys.readouterr().err
