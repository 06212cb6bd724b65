import json

import pytest

from experiments import fedavg_attacks
from experiments.fedavg_attacks import Setting, settings


def test_axes_grid_varies_one_factor_at_a_time_from_the_base():
    grid = settings([100, 10], [10, 50], [1, 2, 5], "axes")
    assert grid == [Setting(100, 10, 1), Setting(10, 10, 1), Setting(100, 50, 1),
                    Setting(100, 10, 2), Setting(100, 10, 5)]
    assert len(settings([100, 10], [10, 50], [1, 2, 5], "full")) == 12


@pytest.mark.parametrize("flags, message", [
    (["--clients=0"], "--clients needs integers >= 1"),
    (["--batch=a"], "--batch takes comma-separated integers"),
    (["--attacks=ig"], "unknown attack 'ig'"),
    (["--clients=100", "--train-cap=50"], "smaller than the largest --clients"),
])
def test_bad_flags_say_what_is_wrong(flags, message, tmp_path, capsys):
    assert fedavg_attacks.main([*flags, f"--workdir={tmp_path}", "--data-source=embedded"]) == 2
    assert message in capsys.readouterr().err


def test_one_setting_writes_rows_and_a_rerun_resumes(tmp_path, capsys):
    # One federation round of 6 clients on 60 embedded MNIST images (client 0 holds 8
    # training images after the 20% hold-out), single-step IG for 3 iterations.
    flags = ["--data-source=embedded", "--train-cap=60", "--clients=6", "--batch=4",
             "--epochs=1", "--attacks=single-step", "--iters=3", f"--workdir={tmp_path}"]
    assert fedavg_attacks.main(flags) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["clients"], r["num_samples"], r["local_steps"], r["attack"]) for r in rows] == [
        (6, 8, 2, "single-step")]
    assert 0.0 < rows[0]["ssim_mean"] < 1.0 and rows[0]["label_count_error"] == 0.0
    capsys.readouterr()
    assert fedavg_attacks.main(flags) == 0  # everything done: no new row, same table
    out = capsys.readouterr()
    assert "K=6" not in out.err
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
    assert "| 6 | 8 | 4 | 1 | 2 | single-step | 8 |" in out.out
