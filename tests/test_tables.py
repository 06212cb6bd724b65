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


def test_authors_ssim_columns_pool_seeds_and_old_rows_print_a_dash():
    new = [{**_attack(s, [0.9, 0.2]), "per_victim_ssim_authors": v}
           for s, v in ((0, [0.95, 0.6]), (1, [0.7, 0.1]))]
    (entry,) = tables.aggregate(new)
    np.testing.assert_allclose(entry["ssim_authors_mean"], 0.5875)
    np.testing.assert_allclose(entry["asr_authors"], 0.75)  # 0.95, 0.6, 0.7 above 0.5
    header, cells = tables.table_rows(new)
    assert cells[header.index("Authors' SSIM ↓")] == "0.59 (± 0.31)"
    assert cells[header.index("Authors' ASR [%] ↓")] == "75.00"
    # one seed without it (an old row): the pooled column is a dash, the rest prints
    header, cells = tables.table_rows([new[0], _attack(1, [0.6, 0.4])])
    assert cells[header.index("Authors' SSIM ↓")] == "–"
    assert cells[header.index("SSIM ↓")] == "0.53 (± 0.26)"
    # rows of the authors' layout never pool with jgi's and say so
    authors = {**_attack(0, [0.1, 0.1]), "layout": "authors",
               "config": {**_attack(0, [])["config"], "layout": "authors"}}
    rows = tables.table_rows([_attack(0, [0.9, 0.9]), authors])
    settings = sorted(r[rows[0].index("Settings")] for r in rows[1:])
    assert settings == ["paper", "paper, authors' layout"]


def test_the_papers_cdia_columns_stay_empty_for_other_attacks():
    header, cdia, pig = tables.table_rows([_attack(0, [0.9]), {**_attack(0, [0.6]),
                                                              "attack": "pig"}])
    col = header.index("Paper (CDIA) SSIM")
    assert cdia[col] == "0.93 (± 0.06)" and pig[col] == "–"  # Table 4, DP row
