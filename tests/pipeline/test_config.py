"""Run configs, presets and the named random streams."""

import re

import jax
import numpy as np
import pytest

from jgi import pipeline
from jgi.fl import fedavg


def test_named_streams_are_distinct_and_reproducible():
    keys, again = pipeline.RunKeys(3), pipeline.RunKeys(3)
    data = {name: jax.random.key_data(keys.stream(name)) for name in pipeline.STREAMS}
    assert len({bytes(np.asarray(v)) for v in data.values()}) == len(pipeline.STREAMS)
    np.testing.assert_array_equal(jax.random.key_data(again.attack), data["attack"])
    assert not np.array_equal(jax.random.key_data(pipeline.RunKeys(4).attack), data["attack"])
    with pytest.raises(ValueError, match="Unknown random stream 'noise'; valid: split"):
        keys.stream("noise")


def test_presets_set_the_scale_and_bad_settings_are_refused():
    smoke = pipeline.preset_config("smoke", stacks=(("dp",),))
    assert smoke.victims == 8 and smoke.ig.max_iters == 1000 and smoke.fedavg.rounds == 2
    assert smoke.preset == "smoke" and smoke.stack(("dp",)).dp is not None
    with pytest.raises(ValueError, match="Unknown preset 'huge'; valid: cpu, paper, smoke"):
        pipeline.preset_config("huge")
    with pytest.raises(ValueError, match="Unknown label mode 'guess'"):
        pipeline.AblationConfig(labels="guess")
    with pytest.raises(ValueError, match="victims must be >= 1"):
        pipeline.AblationConfig(victims=0)


@pytest.mark.parametrize("field, value, says", [
    ("prune_rate", 1.5, "prune_rate (--prune-rate) is a pruning fraction in [0, 1), got 1.5"),
    ("dropout_rate", -0.1, "dropout_rate (--dropout-rate) is a dropout rate in [0, 1)"),
    ("prune_rate", float("nan"), "got nan"),
    ("victim_client", 10, "one of the 10 clients (0 to 9), got 10"),
])
def test_defense_settings_are_checked_even_when_no_stack_uses_them(field, value, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        pipeline.AblationConfig(stacks=((),), **{field: value})


@pytest.mark.slow
def test_smoke_fedavg_trains_on_capped_data_with_the_full_reference_files(
        reference_data_dir, tmp_path, monkeypatch, capsys):
    seen = []
    real_train = pipeline.rows.fedavg.train

    def recording_train(model, stack, data, x_test, y_test, *args, **kwargs):
        seen.append((data.x_train.shape, data.x_val.shape, x_test.shape))
        return real_train(model, stack, data, x_test, y_test, *args, **kwargs)

    monkeypatch.setattr(pipeline.rows.fedavg, "train", recording_train)
    config = pipeline.preset_config(
        "smoke", privacy=False, data_dir=str(reference_data_dir), data_source="dir",
        fedavg=fedavg.FedAvgConfig(rounds=1, patience=1),
        progress=False)
    (row,) = pipeline.run(config, tmp_path)
    ((train, val, test),) = seen
    assert train[:2] == (10, 180) and val[:2] == (10, 20) and test[0] == 500
    assert row.config["data"]["n_train"] == 60_000  # the full reference file was loaded
    assert row.config["data"]["cap"] == [180, 20, 500]
    assert "(capped: at most 180 training" in capsys.readouterr().out


def test_one_layout_flag_sets_data_model_and_row_identity(mnist_sample):
    from jgi import defenses, models
    from jgi.pipeline import rows

    authors = pipeline.AblationConfig(layout="authors", victims=2)
    assert dict(authors.model_options) == {"padding": "VALID"}
    assert dict(pipeline.AblationConfig(model="vit", layout="authors").model_options) == {}
    stack = defenses.from_names([])
    ids = {}
    for config in (pipeline.AblationConfig(victims=2), authors):
        model = models.get("cnn", **dict(config.model_options))
        ids[config.layout] = rows.attack_identity(config, mnist_sample, model, stack, "ig")
    victims = rows.victim_set(authors, mnist_sample)
    assert victims.x.shape == (2, 32, 32, 3) and victims.pool_x.shape[1:] == (32, 32, 3)
    assert victims.originals.max() <= 1.0
    assert "layout" not in ids["jgi"]  # rows made before layouts keep their ids
    assert ids["authors"]["layout"] == "authors"
    assert ids["authors"]["model"]["padding"] == "VALID"
    with pytest.raises(ValueError, match="Unknown layout 'torch'.*jgi, authors"):
        pipeline.AblationConfig(layout="torch")
    with pytest.raises(ValueError, match="sets the cnn's padding to 'VALID'.*'SAME'"):
        pipeline.AblationConfig(layout="authors", model_options=(("padding", "SAME"),))
