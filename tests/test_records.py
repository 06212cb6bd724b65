"""Rows as dataclasses: JSON round trip, old rows, clear errors."""

import json

import pytest

from jgi import records


def _attack_json():
    return {"kind": "attack", "model": "cnn", "dataset": "mnist", "defenses": ["dp"],
            "attack": "cdia", "per_victim_ssim": [0.9, 0.2], "ssim_mean": 0.55,
            "iterations": [40, 40], "config": {"seed": 0}, "row_id": "abc"}


def test_rows_round_trip_through_json():
    row = records.from_json(_attack_json())
    assert isinstance(row, records.AttackRow)
    assert row.defenses == ("dp",) and row.per_victim_ssim == (0.9, 0.2)
    again = records.from_json(json.loads(json.dumps(row.to_json())))
    assert again == row
    utility = records.UtilityRow(model="cnn", dataset="mnist", defenses=("mixup",),
                                 encoding="mixup", accuracy=0.9, history={"val_loss": [1.0]})
    assert records.from_json(json.loads(json.dumps(utility.to_json()))) == utility


def test_old_rows_read_with_defaults_and_their_encoding_from_the_stack():
    old = {k: v for k, v in _attack_json().items() if k != "kind"}  # oldest files: no kind
    old["defenses"] = ["instahide"]
    row = records.from_json(old)
    assert row.kind == "attack" and row.encoding == "instahide" and row.label_accuracy is None


def test_a_row_missing_a_required_field_names_it():
    bad = _attack_json()
    del bad["per_victim_ssim"]
    with pytest.raises(ValueError, match="attack row needs per_victim_ssim"):
        records.from_json(bad)
    with pytest.raises(ValueError, match="Unknown row kind 'plot'"):
        records.from_json({**_attack_json(), "kind": "plot"})


def test_old_rows_lack_the_authors_ssim_and_layout_and_still_load():
    row = records.from_json(_attack_json())
    assert row.ssim_authors_mean is None and row.per_victim_ssim_authors == ()
    assert row.layout == "jgi"
    new = records.from_json({**_attack_json(), "per_victim_ssim_authors": [0.95, 0.4],
                             "asr_authors": 0.5, "layout": "authors"})
    assert new.per_victim_ssim_authors == (0.95, 0.4) and new.layout == "authors"
    assert records.from_json(json.loads(json.dumps(new.to_json()))) == new
