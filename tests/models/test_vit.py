"""The paper's small ViT: layout, parameter count, explicit noise, defenses, attacks."""

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import fl, models

vit_lib = importlib.import_module("jgi.models.vit")  # jgi.models.vit is also the factory

CIFAR, MNIST = (32, 32, 3), (28, 28, 1)
# A two-block ViT of the same code, for the tests that compile a second-order attack step
# per defense stack (the CVB still sits after block 0, with a block after it).
SMALL = {"depth": 2, "width": 16, "heads": 2, "mlp_width": 16, "conv_impl": "lax"}


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_params(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), shape))


@pytest.fixture(scope="module")
def full():
    """The full ViT with dropout and CVB, its params on CIFAR shapes, a batch of 2."""
    model = models.get("vit", dropout=0.25, bottleneck="cvb")
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), CIFAR)
    x = jax.random.normal(jax.random.key(1), (2, *CIFAR))
    return model, params, x


@pytest.mark.parametrize("shape,tokens,count", [(CIFAR, 65, 1_609_216), (MNIST, 50, 1_597_184)])
def test_parameter_count_and_logit_shapes(shape, tokens, count):
    model = models.get("vit")
    params = _abstract_params(model, shape)
    block = 2 * 512 + 4 * 256 * 256 + 2 * 256 * 256  # two LayerNorms, attention, MLP
    assert count == 4 * 4 * shape[-1] * 256 + 256 + tokens * 256 + 4 * block + 512 + 2560
    assert _count(params) == count
    if shape == CIFAR:  # the paper: 16,092 kept at 99% pruning, 1% of 1,609,216 rounded
        assert round(0.01 * count) == 16_092
    assert model.layer_order == ("embedding", "block0", "block1", "block2", "block3", "norm",
                                 "dense")
    assert set(params) == set(model.layer_order)
    assert params["embedding"]["patch"]["w"].shape == (4, 4, shape[-1], 256)
    assert params["embedding"]["pos"].shape == (tokens, 256)
    biases = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
              if jax.tree_util.keystr(p).endswith("['b']")]
    assert biases == []  # the authors' config: bias False everywhere but the LayerNorms
    logits, penalty = jax.eval_shape(model.forward, params,
                                     jax.ShapeDtypeStruct((2, *shape), jnp.float32), {})
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32 and penalty.shape == ()


def test_bottlenecks_view_tokens_as_channels_and_sit_where_the_authors_put_them():
    cvb = models.get("vit", bottleneck="cvb")
    params = _abstract_params(cvb, CIFAR)
    assert params["bottleneck"]["mu"]["w"].shape == (3, 3, 65, 32)  # T channels, K = T // 2
    assert params["bottleneck"]["decoder"]["w"].shape == (1, 1, 32, 65)
    assert cvb.layer_order[:3] == ("embedding", "block0", "bottleneck")
    pre = models.get("vit", bottleneck="precode", precode_position="classifier")
    params = _abstract_params(pre, CIFAR)
    assert params["bottleneck"]["encoder"]["w"].shape == (256, 512)
    assert pre.layer_order[-3:] == ("norm", "bottleneck", "dense")
    pre = models.get("vit", bottleneck="precode")  # default: after block 0, like the CVB
    params = _abstract_params(pre, CIFAR)
    assert params["bottleneck"]["encoder"]["w"].shape == (65 * 256, 512)
    assert pre.layer_order[:3] == ("embedding", "block0", "bottleneck")


@pytest.mark.parametrize("shape,tokens", [(CIFAR, 65), (MNIST, 50)])
def test_noise_keys_and_shapes(shape, tokens):
    model = models.get("vit", dropout=0.25, bottleneck="cvb")
    noise = jax.eval_shape(lambda: model.sample_noise(jax.random.key(0), shape, 3))
    expected = {"embedding": (3, tokens, 256)}
    for i in range(4):
        expected.update({f"block{i}.attention": (3, 16, tokens, tokens),
                         f"block{i}.projection": (3, tokens, 256),
                         f"block{i}.mlp1": (3, tokens, 256), f"block{i}.mlp2": (3, tokens, 256)})
    assert {k: v.shape for k, v in noise["dropout"].items()} == expected
    assert noise["eps"].shape == (3, 16, 16, tokens // 2)
    pre = models.get("vit", bottleneck="precode")
    assert jax.eval_shape(lambda: pre.sample_noise(jax.random.key(0), shape, 3))["eps"].shape \
        == (3, 256)
    assert models.get("vit").sample_noise(jax.random.key(0), shape, 3) == {}


def test_layer_norm_matches_flax():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16)) * 3 + 1
    p = {"scale": jax.random.normal(jax.random.key(1), (16,)),
         "bias": jax.random.normal(jax.random.key(2), (16,))}
    ref = nn.LayerNorm(epsilon=1e-6).apply({"params": p}, x)
    np.testing.assert_allclose(vit_lib.layer_norm(p, x), ref, rtol=1e-5, atol=1e-5)


def test_jit_equals_no_jit_and_noise_is_explicit(full):
    model, params, x = full
    lax_model = models.get("vit", dropout=0.25, bottleneck="cvb", conv_impl="lax")
    noise = model.sample_noise(jax.random.key(2), CIFAR, 2)
    forward = jax.jit(lax_model.forward)
    logits, penalty = forward(params, x, noise)
    eager, eager_penalty = lax_model.forward(params, x, noise)
    np.testing.assert_allclose(logits, eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(penalty, eager_penalty, rtol=1e-5)
    same = model.sample_noise(jax.random.key(2), CIFAR, 2)
    np.testing.assert_array_equal(forward(params, x, same)[0], logits)
    other = model.sample_noise(jax.random.key(3), CIFAR, 2)
    for part in ("dropout", "eps"):  # each source of randomness changes the output
        mixed = {**noise, part: other[part]}
        assert not np.allclose(forward(params, x, mixed)[0], logits, atol=1e-4)
    ones = {**noise, "dropout": jax.tree.map(lambda m: jnp.full_like(m, 0.75),
                                             noise["dropout"])}  # E[mask]: no dropout
    plain = models.get("vit", bottleneck="cvb", conv_impl="lax").forward(
        params, x, {"eps": noise["eps"]})[0]
    np.testing.assert_allclose(forward(params, x, ones)[0], plain, rtol=1e-4, atol=1e-5)


def test_patches_and_lax_give_the_same_logits(full):
    model, params, x = full
    noise = model.sample_noise(jax.random.key(2), CIFAR, 2)
    lax_model = models.get("vit", dropout=0.25, bottleneck="cvb", conv_impl="lax")
    a = jax.jit(model.apply)(params, x, noise)
    b = lax_model.apply(params, x, noise)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_forward_and_backward_are_finite(full):
    model, params, x = full
    noise = model.sample_noise(jax.random.key(2), CIFAR, 2)
    loss, grads = jax.jit(jax.value_and_grad(
        lambda p: fl.client_loss(model, p, x, jnp.array([1, 2]), noise)))(params)
    assert np.isfinite(float(loss))
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
    assert float(jnp.abs(grads["embedding"]["patch"]["w"]).max()) > 0


# Two stacks cover every layer the attack estimates: dropout masks and the CVB's eps in
# one, PRECODE's eps in the other (each stack compiles a CDIA step of its own, 10-20 s;
# the undefended step is the CNN tests' and the runner tests').
@pytest.mark.parametrize("spec", ["dropout,cvb", "precode"])
def test_a_cdia_step_runs_under_each_defense(spec, cdia_step):
    model, params, state, new = cdia_step("vit", spec, MNIST, **SMALL)
    assert np.all(np.asarray(new.iteration) == 1)
    assert np.all(np.isfinite(new.last_loss))
    assert not np.allclose(new.candidate["x"], state.candidate["x"])
    if "dropout" in spec:
        masks = new.candidate["masks"]
        assert len(masks) == 1 + 2 * 4 and masks["block1.attention"].shape == (2, 1, 2, 50, 50)
        assert all(float(m.min()) >= 0.0 for m in masks.values())
    if "cvb" in spec:
        assert new.candidate["eps"].shape == (2, 1, 4, 4, 25)  # 50 tokens as channels
    if "precode" in spec:
        assert new.candidate["eps"].shape == (2, 1, 256)


def test_pig_leaves_out_the_decoder_and_later_layers():
    model = models.get("vit", bottleneck="cvb")
    params = _abstract_params(model, CIFAR)
    keep = model.leaves_before_bottleneck_decoder(params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    kept = {p for p, k in zip(paths, keep, strict=True) if k}
    # The authors' ViTCVB.yaml ignores ['decoder', 'layers.1', 'layers.2', 'layers.3',
    # 'final_layer_norm', 'classifier'].
    assert {p.split("'")[1] for p in kept} == {"embedding", "block0", "bottleneck"}
    assert {p for p in kept if p.startswith("['bottleneck']")} == {
        "['bottleneck']['mu']['w']", "['bottleneck']['sigma']['w']"}
    assert len(kept) == 3 + 10 + 2  # patch, cls, pos; block0's 10 leaves; mu, sigma


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="multiples of 4"):
        models.get("vit").init(jax.random.key(0), (30, 30, 1))
    with pytest.raises(ValueError, match="perfect square"):
        models.get("vit", bottleneck="cvb", width=48, heads=4)
    with pytest.raises(ValueError, match="5 heads do not divide the width 256"):
        models.get("vit", heads=5)
    with pytest.raises(ValueError, match="supports precode, cvb"):
        models.get("vit", bottleneck="vae")
    model = models.get("vit", **SMALL, dropout=0.25)
    params = _abstract_params(model, CIFAR)  # the checks come before any computation
    with pytest.raises(ValueError, match=r"65 tokens.*\(28, 28, 1\) give 50"):
        model.apply(params, jnp.zeros((1, *MNIST)), model.sample_noise(jax.random.key(0),
                                                                       MNIST, 1))
    with pytest.raises(ValueError, match="noise has keys"):
        model.apply(params, jnp.zeros((1, *CIFAR)), {})
