"""ResNet-18 with GroupNorm: layout, parameter count, explicit noise, defenses, attacks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import fl, models
from jgi.models import resnet as resnet_lib

CIFAR, MNIST = (32, 32, 3), (28, 28, 1)
# A two-stage ResNet of the same code, for the tests that compile a second-order attack
# step per defense stack: the full ResNet-18 takes minutes for the five on a busy CPU.
# "lax" compiles faster; that "patches" is the same function is tested below.
SMALL = {"widths": (8, 16), "blocks": (1, 1), "conv_impl": "lax"}


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_params(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), shape))


@pytest.fixture(scope="module")
def full():
    """The full ResNet-18 with dropout and CVB, its params on CIFAR shapes, a batch of 2."""
    model = models.get("resnet18", dropout=0.25, bottleneck="cvb")
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), CIFAR)
    x = jax.random.normal(jax.random.key(1), (2, *CIFAR))
    return model, params, x


@pytest.mark.parametrize("shape,count", [(CIFAR, 11_181_642), (MNIST, 11_175_370)])
def test_parameter_count_and_logit_shapes(shape, count):
    model = models.get("resnet18")
    params = _abstract_params(model, shape)
    # torchvision's resnet18 with a 10-way head: 11,689,512 - 1000 * 513 + 10 * 513 on RGB.
    assert _count(params) == count
    assert model.layer_order == ("stem", "layer1", "layer2", "layer3", "layer4", "dense")
    assert set(params) == set(model.layer_order)
    assert params["stem"]["conv"]["w"].shape == (7, 7, shape[-1], 64)
    assert "b" not in params["stem"]["conv"] and "b" in params["dense"]
    assert set(params["layer1"]["block0"]) == {"conv1", "norm1", "conv2", "norm2"}
    assert params["layer2"]["block0"]["downsample"]["conv"]["w"].shape == (1, 1, 64, 128)
    assert "downsample" not in params["layer2"]["block1"]
    assert params["dense"]["w"].shape == (512, 10)
    logits, penalty = jax.eval_shape(model.forward, params,
                                     jax.ShapeDtypeStruct((2, *shape), jnp.float32), {})
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32 and penalty.shape == ()


def test_bottlenecks_add_what_their_papers_say():
    base = _count(_abstract_params(models.get("resnet18"), CIFAR))
    cvb = _abstract_params(models.get("resnet18", bottleneck="cvb"), CIFAR)
    assert _count(cvb) - base == 2 * 5 * 5 * 64 * 32 + 32 * 64  # K = 64 / 2, kernel 5
    assert cvb["bottleneck"]["mu"]["w"].shape == (5, 5, 64, 32)
    late = models.get("resnet18", bottleneck="precode", precode_position="classifier")
    pre = _abstract_params(late, CIFAR)
    assert _count(pre) - base == (512 * 512 + 512) + (256 * 512 + 512)  # K = 256
    pre = _abstract_params(models.get("resnet18", bottleneck="precode"), CIFAR)  # after layer1
    assert _count(pre) - base == (4096 * 512 + 512) + (256 * 4096 + 4096)  # 8x8x64 flattened
    assert models.get("resnet18", bottleneck="cvb").layer_order[:3] == ("stem", "layer1",
                                                                        "bottleneck")
    assert late.layer_order[-2:] == ("bottleneck", "dense")


@pytest.mark.parametrize("shape,side", [(CIFAR, 8), (MNIST, 7)])
def test_noise_keys_and_shapes(shape, side):
    for bottleneck, eps in [("cvb", (3, side, side, 32)), ("precode", (3, 256))]:
        model = models.get("resnet18", dropout=0.25, bottleneck=bottleneck)
        noise = jax.eval_shape(lambda m=model: m.sample_noise(jax.random.key(0), shape, 3))
        assert set(noise) == {"dropout", "eps"}
        assert {k: v.shape for k, v in noise["dropout"].items()} == {"pool": (3, 512)}
        assert noise["eps"].shape == eps
    assert models.get("resnet18").sample_noise(jax.random.key(0), shape, 3) == {}


def test_init_follows_torchvision(full):
    _, params, _ = full
    w = np.asarray(params["layer3"]["block0"]["conv1"]["w"])  # Kaiming normal, fan_out
    assert np.std(w) == pytest.approx(np.sqrt(2 / (3 * 3 * 256)), rel=0.02)
    np.testing.assert_array_equal(params["layer1"]["block0"]["norm1"]["scale"], 1.0)
    np.testing.assert_array_equal(params["layer1"]["block0"]["norm1"]["bias"], 0.0)
    bound = 1 / np.sqrt(512)  # the classifier keeps PyTorch's default Linear init
    assert 0.9 * bound < float(jnp.abs(params["dense"]["w"]).max()) <= bound


def test_group_norm_and_max_pool_match_flax():
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 8)) * 3 + 1
    p = {"scale": jax.random.normal(jax.random.key(1), (8,)),
         "bias": jax.random.normal(jax.random.key(2), (8,))}
    ref = nn.GroupNorm(num_groups=2, epsilon=1e-5).apply({"params": p}, x)
    np.testing.assert_allclose(resnet_lib.group_norm(p, x, 2), ref, rtol=1e-5, atol=1e-5)
    ref = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # -inf padding
    for impl in ("patches", "lax"):
        np.testing.assert_array_equal(resnet_lib.max_pool(x, 3, 2, 1, impl), ref)


def test_jit_equals_no_jit_and_noise_is_explicit(full):
    model, params, x = full
    lax_model = models.get("resnet18", dropout=0.25, bottleneck="cvb", conv_impl="lax")
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


def test_patches_and_lax_give_the_same_logits(full):
    model, params, x = full
    noise = model.sample_noise(jax.random.key(2), CIFAR, 2)
    lax_model = models.get("resnet18", dropout=0.25, bottleneck="cvb", conv_impl="lax")
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
    assert float(jnp.abs(grads["stem"]["conv"]["w"]).max()) > 0  # reaches the first layer


# Two stacks cover every layer the attack estimates: dropout masks and the CVB's eps in
# one, PRECODE's eps in the other (each stack compiles a CDIA step of its own, 10-20 s;
# the undefended step is the CNN tests' and the runner tests').
@pytest.mark.parametrize("spec", ["dropout,cvb", "precode"])
def test_a_cdia_step_runs_under_each_defense(spec, cdia_step):
    model, params, state, new = cdia_step("resnet18", spec, MNIST, **SMALL)
    assert np.all(np.asarray(new.iteration) == 1)
    assert np.all(np.isfinite(new.last_loss))
    assert not np.allclose(new.candidate["x"], state.candidate["x"])
    if "dropout" in spec:
        assert new.candidate["masks"]["pool"].shape == (2, 1, 16)
        assert float(new.candidate["masks"]["pool"].min()) >= 0.0
    if "cvb" in spec:
        assert new.candidate["eps"].shape == (2, 1, 7, 7, 8)  # K = max(8 / 2, 8)
    if "precode" in spec:
        assert new.candidate["eps"].shape == (2, 1, 256)


def test_pig_leaves_out_the_decoder_and_later_layers():
    model = models.get("resnet18", bottleneck="cvb")
    keep = model.leaves_before_bottleneck_decoder(_abstract_params(model, CIFAR))
    paths = [jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(_abstract_params(model, CIFAR))[0]]
    kept = {p for p, k in zip(paths, keep, strict=True) if k}
    # The authors' ResNet18CVB.yaml ignores ['decoder', 'layer2', 'layer3', 'layer4', 'fc'].
    assert {p.split("'")[1] for p in kept} == {"stem", "layer1", "bottleneck"}
    assert {p for p in kept if p.startswith("['bottleneck']")} == {
        "['bottleneck']['mu']['w']", "['bottleneck']['sigma']['w']"}
    assert len(kept) == 3 + 2 * 6 + 2  # stem conv w + norm, two blocks of layer1, mu, sigma


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="supports precode, cvb"):
        models.get("resnet18", bottleneck="vae")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        models.get("resnet18", dropout=1.0)
    with pytest.raises(ValueError, match="must divide every width"):
        models.get("resnet18", groups=3)
    with pytest.raises(ValueError, match="Valid models: .*cnn, .*resnet18"):
        models.get("resnet")
    model = models.get("resnet18", **SMALL, dropout=0.25)
    params = _abstract_params(model, MNIST)  # the checks come before any computation
    with pytest.raises(ValueError, match="noise has keys"):
        model.apply(params, jnp.zeros((1, *MNIST)), {})
    with pytest.raises(ValueError, match=r"resnet18.*\(batch, H, W, 1\), got \(1, 32, 32, 3\)"):
        model.apply(params, jnp.zeros((1, *CIFAR)), model.sample_noise(jax.random.key(0),
                                                                       CIFAR, 1))
