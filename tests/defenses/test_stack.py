import pytest

from jgi import defenses, models


@pytest.mark.parametrize("spec,message", [
    ("precode,cvb", "at most one"),
    ("dropout,blur", r"Unknown defense\(s\) \['blur'\].*dropout, dp, prune"),
    ("dp,dp", "listed twice"),
    ("mixup,instahide", "either 'mixup' or 'instahide'"),
])
def test_invalid_stacks_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        defenses.from_names(spec)


def test_a_bottleneck_without_a_place_in_the_model_is_refused():
    stack = defenses.from_names("cvb")
    with pytest.raises(ValueError, match="no place in it.*supports: precode"):
        models.get("mlp", **stack.model_options())
    models.get("mlp", **defenses.from_names("precode").model_options())  # fine


def test_paper_settings_and_names():
    stack = defenses.from_names("dropout,dp,prune,cvb")
    assert stack.dropout == 0.25 and stack.prune == 0.5 and stack.bottleneck == "cvb"
    assert stack.dp.clip_norm == 20.0 and stack.dp.noise_multiplier == 1e-4
    assert stack.names == ["dropout", "dp", "prune", "cvb"]
    assert defenses.from_names("none").names == [] and defenses.from_names("").names == []
    assert stack.model_options() == {"dropout": 0.25, "bottleneck": "cvb"}


def test_the_24_ablation_stacks_in_table_4_order():
    stacks = defenses.ablation_stacks()
    assert len(stacks) == 24 and len({tuple(s) for s in stacks}) == 24
    assert stacks[:3] == [[], ["precode"], ["cvb"]]
    assert stacks[-1] == ["dropout", "dp", "prune", "cvb"]
    for names in stacks:
        assert defenses.from_names(names).names == names
