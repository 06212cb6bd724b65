"""The secure-aggregation experiment runs end to end at toy scale."""

import json

import numpy as np

from experiments import secure_aggregation


def test_dropout_table_finishes_up_to_the_threshold_and_refuses_beyond(capsys):
    assert secure_aggregation.main(["--parts=dropouts", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{")]
    by = {(r["drop_before"], r["dropped"]): r["outcome"] for r in rows}
    assert by[("masked_input", 4)] == "sum of 6 clients, exact: True"  # N=10, t=6
    assert by[("unmask", 4)] == "sum of 10 clients, exact: True"
    assert by[("masked_input", 5)].startswith("refused: ")
    assert by[("unmask", 5)].startswith("refused: ")


def test_ig_inverts_the_plaintext_update_but_not_the_masked_one(capsys):
    assert secure_aggregation.main(["--parts=single", "--model=mlp", "--iters=10", "--json",
                                    "--data-source=embedded"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{")]
    single = {r["observed"]: r["ssim"] for r in rows}
    # 10 IG steps on the MLP: plaintext measured 0.93 (20 steps: 0.98), masked 0.00,
    # CKKS bytes 0.01, chance 0.02.
    assert single["plaintext gradient"] > 0.5 and single["SecAgg masked input"] < 0.15
    assert single.get("CKKS ciphertext bytes", 0.0) < 0.15


def test_reconstructions_are_matched_to_originals_one_to_one():
    x = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 1)).astype(np.float32)
    s = secure_aggregation.matched_ssim(x, x[[2, 0, 1]])
    np.testing.assert_allclose(s, 1.0, atol=1e-5)


def test_bad_flags_are_refused(capsys):
    assert secure_aggregation.main(["--parts=nope"]) == 2
    assert secure_aggregation.main(["--clients=0"]) == 2
    assert "--clients takes positive integers" in capsys.readouterr().out
