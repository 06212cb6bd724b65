"""Run configs, presets and the named random streams."""

import re

import jax
import numpy as np
import pytest

from jgi import pipeline


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
