"""PRECODE in the CVB framework's position 0 (issue 16): placement per model, the KL in
bits, PIG's kept leaves, and the classifier placement kept as an option."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import models
from jgi.models import bottleneck

CIFAR = (32, 32, 3)
SLOT0 = {  # model -> (options, input, layer order, PIG's kept top-level keys)
    "cnn": ({}, (28, 28, 1), ("conv0", "bottleneck", "conv1", "conv2", "dense"),
            {"conv0"}),
    "resnet18": ({}, CIFAR, ("stem", "layer1", "bottleneck", "layer2", "layer3", "layer4",
                             "dense"), {"stem", "layer1"}),
    "vit": ({}, CIFAR, ("embedding", "block0", "bottleneck", "block1", "block2", "block3",
                        "norm", "dense"), {"embedding", "block0"}),
}
FEATURES = {"cnn": 14 * 14 * 16, "resnet18": 8 * 8 * 64, "vit": 65 * 256}


def _abstract(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), shape))


@pytest.mark.parametrize("name", sorted(SLOT0))
def test_precode_sits_where_the_cvb_sits_and_pig_keeps_what_comes_before(name):
    options, shape, order, kept_layers = SLOT0[name]
    pre = models.get(name, bottleneck="precode", **options)
    cvb = models.get(name, bottleneck="cvb", **options)
    assert pre.layer_order == order == cvb.layer_order  # the CVB framework's position 0
    assert dict(pre.options)["precode_position"] == "slot0"
    params = _abstract(pre, shape)
    # the encoder reads the flattened feature map: Linear(prod(in_shape), 2K), K = 256
    assert params["bottleneck"]["encoder"]["w"].shape == (FEATURES[name], 512)
    assert params["bottleneck"]["decoder"]["w"].shape == (256, FEATURES[name])
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    keep = pre.leaves_before_bottleneck_decoder(params)
    kept = {p for p, k in zip(paths, keep, strict=True) if k}
    # The authors' PIG lists drop the decoder and every later layer (AUTHORS-CODE.md).
    assert {p.split("'")[1] for p in kept} == kept_layers | {"bottleneck"}
    assert {p for p in kept if p.startswith("['bottleneck']")} == {
        "['bottleneck']['encoder']['w']", "['bottleneck']['encoder']['b']"}
    assert all(k for p, k in zip(paths, keep, strict=True) if p.split("'")[1] in kept_layers)
    late = models.get(name, bottleneck="precode", precode_position="classifier", **options)
    assert late.layer_order[-2:] == ("bottleneck", "dense")
    assert dict(late.options)["precode_position"] == "classifier"
    # models without PRECODE neither use nor record the option (their row ids hold)
    assert "precode_position" not in dict(
        models.get(name, precode_position="classifier", **options).options)
    with pytest.raises(ValueError, match="unknown precode_position 'last'.*slot0, classifier"):
        models.get(name, bottleneck="precode", precode_position="last", **options)


def test_cnn_slot0_is_precode_block0_and_the_two_placements_exclude_each_other():
    # precode_block=0 is checked against a by-hand forward in tests/defenses.
    slot0 = models.get("cnn", bottleneck="precode")
    block0 = models.get("cnn", bottleneck="precode", precode_block=0)
    assert slot0.layer_order == block0.layer_order
    shape = (16, 16, 1)
    p0, p1 = _abstract(slot0, shape), _abstract(block0, shape)
    assert jax.tree.map(lambda a: a.shape, p0) == jax.tree.map(lambda a: a.shape, p1)
    with pytest.raises(ValueError, match="both place PRECODE"):
        models.get("cnn", bottleneck="precode", precode_position="classifier", precode_block=1)


def test_precode_kl_is_in_bits_as_the_authors_compute_it():
    k = 2
    # Encoder w = 0: mu and the pre-softplus sigma are the biases, the same for every row.
    # mu = (1, 0); sigma = softplus(b) = (1, 2).
    b_sigma = np.log(np.expm1(np.array([1.0, 2.0])))
    params = {"encoder": {"w": jnp.zeros((3, 2 * k)),
                          "b": jnp.asarray(np.concatenate([[1.0, 0.0], b_sigma]), jnp.float32)},
              "decoder": {"w": jnp.ones((k, 3)), "b": jnp.zeros(3)}}
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 (s^2 + mu^2 - 1 - 2 ln s) per unit, summed over K:
    # unit 0: 0.5 (1 + 1 - 1 - 0) = 0.5; unit 1: 0.5 (4 + 0 - 1 - 2 ln 2) = 1.5 - ln 2.
    nats = 0.5 + 1.5 - math.log(2.0)
    _, penalty = jax.jit(bottleneck.precode_apply, static_argnames="beta")(
        params, jnp.ones((4, 3)), jnp.zeros((4, k)), beta=0.1)
    assert float(penalty) == pytest.approx(0.1 * nats / math.log(2.0), rel=1e-5)  # 0.1885 bits
