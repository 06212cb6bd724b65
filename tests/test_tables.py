"""Table aggregation: SSIM pooled over seeds' victims, accuracy as mean ± std over seeds."""

import numpy as np

from jgi import tables


def _attack(seed, ssims):
    return {"kind": "attack", "dataset": "mnist", "model": "cnn", "defenses": ["dp"],
            "attack": "cdia", "seed": seed, "per_victim_ssim": ssims, "psnr_mean": 20.0,
            "config": {"seed": seed, "preset": "cpu", "dp": {"noise_multiplier": 1e-4}}}


def _utility(seed, accuracy):
    return {"kind": "utility", "dataset": "mnist", "model": "cnn", "defenses": ["dp"],
            "seed": seed, "accuracy": accuracy,
            "config": {"seed": seed, "preset": "cpu", "dp": {"noise_multiplier": 1e-4}}}


def test_seeds_are_pooled_and_accuracy_is_mean_and_std_over_seeds():
    rows = [_attack(0, [0.9, 0.2]), _attack(1, [0.6, 0.4]), _utility(0, 0.97),
            _utility(1, 0.99)]
    (entry,) = tables.aggregate(rows)
    assert entry["seeds"] == [0, 1] and entry["n_victims"] == 4
    np.testing.assert_allclose(entry["ssim_mean"], 0.525)
    np.testing.assert_allclose(entry["asr"], 0.5)  # 0.9 and 0.6 are above 0.5
    np.testing.assert_allclose(entry["accuracy"], 0.98)
    np.testing.assert_allclose(entry["accuracy_std"], 0.01)
    assert "98.00 (± 1.00)" in tables.markdown_table(rows)


def test_one_seed_is_not_shown_as_zero_spread():
    table = tables.markdown_table([_attack(0, [0.9]), _utility(0, 0.97)])
    assert "97.00 (1 seed)" in table and "97.00 (± 0.00)" not in table
