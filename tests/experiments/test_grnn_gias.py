"""experiments.grnn_gias: rows keyed by every setting, and GGL's one image scored by its
best match among a batch's originals."""
import json

import numpy as np

from experiments import grnn_gias


def test_rows_are_keyed_and_resumable(tmp_path):
    argv = ["--data-source=embedded", "--attack=ig", "--victims=1", "--batch=2",
            "--latent-iters=1", "--param-iters=1", f"--out={tmp_path}"]
    assert grnn_gias.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").open()]
    assert len(rows) == 1 and rows[0]["row_id"] and rows[0]["iters"] == 2
    assert rows[0]["scoring"] == "positional" and len(rows[0]["ssim"]) == 2
    assert grnn_gias.main(argv) == 0  # done: nothing recomputed
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 1
    assert grnn_gias.main(argv[:-1] + ["--seed=1", f"--out={tmp_path}"]) == 0
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 2


def test_one_image_per_victim_is_scored_by_its_best_match():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 3, 16, 16, 1)).astype(np.float32)
    recon = x[:, [2]]  # each victim's third image, exactly
    row = grnn_gias.row_of("ggl", x, recon, np.array([[7], [9]]),
                           np.array([[0, 1, 7], [5, 1, 2]]), [0.0, 0.0], 1.0, {})
    assert row["scoring"].startswith("best match") and row["ssim_mean"] > 0.999
    assert row["label_acc"] == 0.5  # victim 0's guess 7 is its third label, victim 1's not
