"""Dropout masks and variational bottlenecks (PRECODE, CVB) inside the models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jgi import models
from jgi.models import bottleneck, dropout
from jgi.models import layers


def test_dropout_masks_are_explicit_inputs():
    model = models.get("cnn", dropout=0.25)
    params = model.init(jax.random.key(0), (28, 28, 1))
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    noise = model.sample_noise(jax.random.key(2), (28, 28, 1), 2)
    assert set(noise["dropout"]) == {"conv0", "conv1", "conv2"}
    assert noise["dropout"]["conv0"].shape == (2, 14, 14, 16)
    rate = float(np.mean(np.concatenate([np.asarray(m).ravel()
                                         for m in noise["dropout"].values()])))
    assert rate == pytest.approx(0.75, abs=0.02)  # keep probability 1 - p
    same = model.sample_noise(jax.random.key(2), (28, 28, 1), 2)
    jax.tree.map(np.testing.assert_array_equal, noise, same)
    out = model.apply(params, x, noise)
    np.testing.assert_array_equal(out, model.apply(params, x, same))  # supplied -> used exactly
    other = model.sample_noise(jax.random.key(3), (28, 28, 1), 2)
    assert not np.allclose(out, model.apply(params, x, other))
    ones = jax.tree.map(lambda m: jnp.ones_like(m) * 0.75, noise)  # E[mask]: no dropout
    plain = models.get("cnn").apply(params, x, {})
    np.testing.assert_allclose(model.apply(params, x, ones), plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["precode", "cvb"])
def test_bottleneck_with_fixed_eps_is_deterministic_and_noise_matters(kind):
    model = models.get("cnn", bottleneck=kind)
    params = model.init(jax.random.key(0), (32, 32, 3))
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    noise = model.sample_noise(jax.random.key(2), (32, 32, 3), 2)
    a, pen_a = model.forward(params, x, noise)
    b, pen_b = model.forward(params, x, noise)
    np.testing.assert_array_equal(a, b)
    assert float(pen_a) == float(pen_b) and float(pen_a) > 0
    c, _ = model.forward(params, x, model.sample_noise(jax.random.key(3), (32, 32, 3), 2))
    assert not np.allclose(a, c)


def test_bottleneck_shapes_and_placement():
    cvb = models.get("cnn", bottleneck="cvb")
    params = cvb.init(jax.random.key(0), (28, 28, 1))
    assert params["bottleneck"]["mu"]["w"].shape == (5, 5, 16, 8)  # K = max(16 / 2, 8)
    assert params["bottleneck"]["decoder"]["w"].shape == (1, 1, 8, 16)
    assert "b" not in params["bottleneck"]["mu"]
    assert cvb.layer_order == ("conv0", "bottleneck", "conv1", "conv2", "dense")
    assert cvb.sample_noise(jax.random.key(0), (28, 28, 1), 3)["eps"].shape == (3, 14, 14, 8)
    pre = models.get("cnn", bottleneck="precode", precode_position="classifier")
    params = pre.init(jax.random.key(0), (28, 28, 1))
    assert params["bottleneck"]["encoder"]["w"].shape == (1024, 512)  # Linear(in, 2K)
    assert params["bottleneck"]["decoder"]["w"].shape == (256, 1024)
    assert pre.layer_order[-2:] == ("bottleneck", "dense")


def test_precode_after_block0_encodes_the_flattened_map_and_pig_keeps_conv0_and_encoder():
    pre = models.get("cnn", bottleneck="precode", precode_block=0)
    params = pre.init(jax.random.key(0), (28, 28, 1))
    assert params["bottleneck"]["encoder"]["w"].shape == (14 * 14 * 16, 512)
    assert params["bottleneck"]["decoder"]["w"].shape == (256, 14 * 14 * 16)
    assert pre.layer_order == ("conv0", "bottleneck", "conv1", "conv2", "dense")
    assert dict(pre.options)["precode_block"] == 0
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    noise = pre.sample_noise(jax.random.key(2), (28, 28, 1), 2)
    # by hand: conv0 -> PRECODE on the flattened map -> back to 14x14x16 -> conv1 ...
    h = jax.nn.relu(layers.conv(params["conv0"], x, stride=2, padding="SAME"))
    dec, pen = bottleneck.precode_apply(params["bottleneck"], h.reshape(2, -1), noise["eps"])
    h = dec.reshape(h.shape)
    for i in (1, 2):
        h = jax.nn.relu(layers.conv(params[f"conv{i}"], h, stride=2, padding="SAME"))
    want = layers.dense(params["dense"], h.reshape(2, -1))
    got, got_pen = pre.forward(params, x, noise)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert float(got_pen) == pytest.approx(float(pen))
    kept = {jax.tree_util.keystr(path) for (path, _), keep in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        pre.leaves_before_bottleneck_decoder(params), strict=True) if keep}
    assert kept == {"['conv0']['w']", "['conv0']['b']", "['bottleneck']['encoder']['w']",
                    "['bottleneck']['encoder']['b']"}
    # a table-wide option: models without PRECODE ignore it (and do not record it)
    assert "precode_block" not in dict(models.get("cnn", bottleneck="cvb",
                                                  precode_block=0).options)
    with pytest.raises(ValueError, match="block index in 0..2"):
        models.get("cnn", bottleneck="precode", precode_block=3)


@settings(max_examples=50, deadline=None)
@given(mu=st.floats(-10, 10), sigma=st.floats(1e-3, 20))
def test_kl_is_nonnegative(mu, sigma):
    assert float(bottleneck.kl_standard_normal(jnp.float32(mu), jnp.float32(sigma))) >= -1e-6


def test_kl_is_zero_at_the_prior_and_precode_penalty_is_beta_kl():
    assert float(bottleneck.kl_standard_normal(jnp.zeros(4), jnp.ones(4)).sum()) == 0.0
    k = 4
    # Encoder that outputs mu = 0 and softplus^-1(1) for sigma: the prior exactly.
    params = {"encoder": {"w": jnp.zeros((6, 2 * k)),
                          "b": jnp.concatenate([jnp.zeros(k),
                                                jnp.full(k, np.log(np.e - 1))])},
              "decoder": {"w": jnp.ones((k, 6)), "b": jnp.zeros(6)}}
    _, penalty = bottleneck.precode_apply(params, jnp.ones((3, 6)), jnp.zeros((3, k)), beta=0.5)
    assert float(penalty) == pytest.approx(0.0, abs=1e-6)
    params["encoder"]["b"] = params["encoder"]["b"].at[0].set(2.0)  # mu_0 = 2: KL = 2
    _, penalty = bottleneck.precode_apply(params, jnp.ones((3, 6)), jnp.zeros((3, k)), beta=0.5)
    assert float(penalty) == pytest.approx(0.5 * 2.0 / np.log(2.0), rel=1e-5)  # KL in bits


def test_dropout_mask_shape_errors_and_rates():
    with pytest.raises(ValueError, match="mask of shape"):
        dropout.apply_mask(jnp.ones((2, 3)), jnp.ones((2, 4)), 0.25)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        models.get("cnn", dropout=1.0)
    model = models.get("cnn", dropout=0.25)
    params = model.init(jax.random.key(0), (28, 28, 1))
    with pytest.raises(ValueError, match="noise has keys"):
        model.apply(params, jnp.ones((1, 28, 28, 1)), {})


def test_defenses_reexport_the_model_layers():
    """The layers live in jgi.models; jgi.defenses.{dropout,bottleneck} are the same ones."""
    from jgi.defenses import bottleneck as defenses_bottleneck
    from jgi.defenses import dropout as defenses_dropout

    for name in defenses_dropout.__all__:
        assert getattr(defenses_dropout, name) is getattr(dropout, name)
    for name in defenses_bottleneck.__all__:
        assert getattr(defenses_bottleneck, name) is getattr(bottleneck, name)
    for layer, reexport in ((dropout, defenses_dropout), (bottleneck, defenses_bottleneck)):
        public = {n for n, v in vars(layer).items()
                  if not n.startswith("_") and getattr(v, "__module__", layer.__name__)
                  == layer.__name__ and not isinstance(v, type(layer))} - {"annotations"}
        assert public == set(reexport.__all__), layer.__name__


def test_leaves_before_bottleneck_decoder_needs_a_bottleneck():
    model = models.get("cnn", dropout=0.25)
    params = model.init(jax.random.key(0), (28, 28, 1))
    with pytest.raises(ValueError, match="cnn has no bottleneck"):
        model.leaves_before_bottleneck_decoder(params)
