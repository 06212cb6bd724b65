"""experiments.ggl_defenses: the --defenses items and which of them reapplying changes."""

import pytest

from experiments import ggl_defenses as gd


def test_defense_items_parse_to_stacks():
    assert gd.parse_defense("none", 20.0).names == []
    dp = gd.parse_defense("dp:1e-2", 20.0).dp
    assert (dp.clip_norm, dp.noise_multiplier) == (20.0, 1e-2)
    dp = gd.parse_defense("dp:1e-3:1", 20.0).dp
    assert (dp.clip_norm, dp.noise_multiplier) == (1.0, 1e-3)
    assert gd.parse_defense("prune:0.9", 20.0).prune == 0.9
    assert gd.parse_defense("dropout", 20.0).dropout == 0.25
    assert gd.parse_defense("precode", 20.0).bottleneck == "precode"
    # Reapplying changes GGL's objective only for gradient-level defenses.
    assert [gd.gradient_level(gd.parse_defense(d, 20.0))
            for d in ("none", "dp:1e-2", "prune:0.5", "dropout", "precode")] == [
        False, True, True, False, False]
    with pytest.raises(ValueError, match="not one of none, dp:SIGMA"):
        gd.parse_defense("noise:1", 20.0)
    with pytest.raises(ValueError, match="pruning fraction must be in"):
        gd.parse_defense("prune:1.5", 20.0)
