"""The library pipeline gives the rows the pre-refactor command gave, for the same seed.

``golden_rows.json`` was written by the code of commit 87e18c8 (the pipeline still in
``experiments/ablation.py``, before the architecture change) with the configuration
below and ``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` as the test suite runs:

    from experiments import ablation
    rows = ablation.run(ablation.AblationConfig(<the fields of _config()>), out)

keeping the fields compared here (all six rows are in the file; the test compares the
three attack rows and one utility row). The row ids match too: a folder of finished rows
written before the change is reused by the same command after it.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from jgi import pipeline
from jgi.attacks import ig
from jgi.fl import fedavg

GOLDEN = Path(__file__).with_name("golden_rows.json")


def _config(**changes):
    return pipeline.AblationConfig(**{
        "stacks": ((), ("dropout", "prune", "cvb"), ("dp",)), "victims": 2,
        "ig": ig.IGConfig(max_iters=60, plateau_patience=20, stop_patience=40, chunk_size=20),
        "fedavg": fedavg.FedAvgConfig(rounds=1, patience=1), "preset": "smoke",
        "data_source": "embedded", "progress": False, **changes})


@pytest.mark.slow
def test_same_seed_gives_the_rows_of_the_code_before_the_pipeline_moved(tmp_path):
    # Every attack row; the utility row of the stack that exercises most of the local
    # training (dropout masks, pruning, the bottleneck's KL) to keep the suite short.
    rows = [r.to_json() for r in pipeline.run(_config(fedavg=None), tmp_path / "attacks")]
    rows += [r.to_json() for r in pipeline.run(
        _config(stacks=(("dropout", "prune", "cvb"),), privacy=False), tmp_path / "utility")]
    golden = json.loads(GOLDEN.read_text())
    golden = ([g for g in golden if g["kind"] == "attack"]
              + [g for g in golden if g["kind"] == "utility" and g["defenses"]
                 == ["dropout", "prune", "cvb"]])
    assert [(r["kind"], r["defenses"]) for r in rows] == [
        (g["kind"], g["defenses"]) for g in golden]
    for row, want in zip(rows, golden, strict=True):
        what = f"{row['kind']} row of {row['defenses'] or 'no defense'}"
        assert row["row_id"] == want["row_id"], what
        if row["kind"] == "attack":
            assert row["iterations"] == want["iterations"], what
            np.testing.assert_allclose(row["per_victim_ssim"], want["per_victim_ssim"],
                                       rtol=0, atol=1e-5, err_msg=what)
            np.testing.assert_allclose(row["best_loss_mean"], want["best_loss_mean"],
                                       rtol=1e-4, err_msg=what)
        else:
            assert row["accuracy"] == want["accuracy"], what
            for k, v in want["history"].items():
                np.testing.assert_allclose(row["history"][k], v, rtol=1e-6, err_msg=what)
