import json

import numpy as np
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
    (["--dirichlet=-1"], "--dirichlet must be > 0 (non-IID) or 0 (IID)"),
])
def test_bad_flags_say_what_is_wrong(flags, message, tmp_path, capsys):
    assert fedavg_attacks.main([*flags, f"--workdir={tmp_path}", "--data-source=embedded"]) == 2
    assert message in capsys.readouterr().err


def test_one_setting_writes_rows_and_a_rerun_resumes(tmp_path, capsys):
    # One federation round of 6 clients on 60 embedded MNIST images (client 0 holds 8
    # training images after the 20% hold-out, 2 local steps of batch 4); DLG with the
    # study's 10 dummies (8 here: at most n) for one L-BFGS step.
    flags = ["--data-source=embedded", "--train-cap=60", "--clients=6", "--batch=4",
             "--epochs=1", "--attacks=dlg", "--dlg-iters=1", f"--workdir={tmp_path}"]
    assert fedavg_attacks.main(flags) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["clients"], r["num_samples"], r["local_steps"], r["attack"], r["dummies"])
            for r in rows] == [(6, 8, 2, "dlg", 8)]
    assert 0.0 < rows[0]["ssim_mean"] < 1.0 and rows[0]["recovered_labels"]
    # DLG's labels are its own: scored against the matched originals' and as a multiset.
    assert 0.0 <= rows[0]["label_accuracy"] <= 1.0 and rows[0]["label_count_error"] is not None
    assert (tmp_path / "grids" / "K6_B4_E1_dlg-raw.png").stat().st_size > 0
    saved = np.load(tmp_path / "reconstructions" / "K6_B4_E1_dlg-raw.npz")
    assert saved["images"].shape == saved["originals"].shape == (8, 28, 28, 1)
    assert rows[0]["row_id"]  # keyed by every setting (jgi.results.KeyedRows)
    capsys.readouterr()
    assert fedavg_attacks.main(flags) == 0  # everything done: no new row, same table
    out = capsys.readouterr()
    assert "K=6" not in out.err
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
    assert "| 6 | 8 | 4 | 1 | 2 | dlg | 0 | 8 |" in out.out


def test_rescaled_dlg_rows_are_marked():
    row = {"attack": "dlg", "dlg_scale": "mean-gradient"}
    assert fedavg_attacks.attack_label(row) == "dlg (÷ lr·steps)"
    assert fedavg_attacks.attack_label({**row, "dlg_scale": "raw"}) == "dlg"
    assert fedavg_attacks.attack_label({**row, "attack": "dlf"}) == "dlf"
    inferred = {"attack": "consistent", "labels": "dimitrov"}
    assert fedavg_attacks.attack_label(inferred) == "consistent (dimitrov counts)"


def test_scores_match_pairs_and_count_labels():
    rng = np.random.default_rng(0)
    originals = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
    images = originals[[2, 0]]  # two reconstructions, of originals 2 and 0
    s = fedavg_attacks.score(originals, np.array([4, 5, 6]), images, np.array([6, 1]), 10)
    assert list(s["rows"]) == [0, 2] and list(s["cols"]) == [1, 0]
    np.testing.assert_allclose(s["ssim"], 1.0, atol=1e-5)
    assert s["label_accuracy"] == 0.5  # original 2 (label 6) right, original 0 (4) not
    assert s["count_error"] is None  # 2 labels against 3: no multiset to compare
    full = fedavg_attacks.score(originals, np.array([4, 5, 6]), originals,
                                np.array([4, 6, 6]), 10)
    # By chance: the same matching against images the client never held.
    assert abs(fedavg_attacks.chance_ssim(originals, originals) - 1.0) < 1e-5
    strangers = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
    assert fedavg_attacks.chance_ssim(strangers, originals) < 0.5
    assert full["label_accuracy"] == 2 / 3 and abs(full["count_error"] - 2 / 3) < 1e-6


def test_curve_table_has_a_line_per_attack_and_the_seeds_spread():
    def row(clients, n, attack, seed, ssim, **extra):
        return {"clients": clients, "num_samples": n, "batch": 4, "epochs": 1,
                "attack": attack, "seed": seed, "ssim_mean": ssim, "ssim_chance": 0.1,
                **extra}
    rows = [row(25, 32, "consistent", 0, 0.4), row(25, 32, "consistent", 1, 0.6),
            row(100, 8, "consistent", 0, 0.7),
            row(25, 32, "consistent", 0, 0.3, labels="dimitrov"),
            row(25, 32, "dlg", 0, 0.2, dlg_scale="mean-gradient"),
            row(25, 32, "dlg", 0, 0.9, batch=16)]  # on the batch axis only
    text = fedavg_attacks.curve_table(rows, Setting(25, 4, 1))
    lines = text.splitlines()
    assert lines[0] == ("| local images n (fewer clients) | consistent | "
                        "consistent (dimitrov counts) | dlg (÷ lr·steps) |")
    assert lines[2] == "| 8 | 0.700 (0.10) |  |  |"
    assert lines[3] == "| 32 | 0.500 ± 0.100 (2 seeds) (0.10) | 0.300 (0.10) | 0.200 (0.10) |"
    assert lines[5].startswith("| local batch B |") and "| 16 |  |  | 0.900 (0.10) |  |" in lines
    assert not any(line.startswith("| local epochs E") for line in lines)  # one value
