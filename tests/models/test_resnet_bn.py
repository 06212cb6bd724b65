"""BatchNorm ResNet-18 and BN CNN: layout, batch statistics by hand, running statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi.models import resnet_bn

CIFAR = (32, 32, 3)


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_resnet18_bn_has_torchvision_layout_and_twenty_bn_layers():
    model = resnet_bn.resnet18_bn()
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), CIFAR))
    # torchvision's resnet18 with a 10-way head, as the GroupNorm variant.
    assert _count(params) == 11_181_642
    logits, stats = jax.eval_shape(model.forward_stats, params,
                                   jax.ShapeDtypeStruct((2, *CIFAR), jnp.float32))
    assert logits.shape == (2, 10)
    assert set(stats) == set(model.bn_layers) and len(stats) == 20  # 1 + 8 * 2 + 3 shortcuts
    assert sum(2 * v["mean"].shape[0] for v in stats.values()) == 9_600
    assert model.stat_counts(params, (2, *CIFAR))["layer4.block1.norm2"] == 2  # 1x1 maps


def test_bn_cnn_batch_statistics_match_a_hand_computation():
    model = resnet_bn.bn_cnn(num_classes=3, width=2, conv_impl="lax")
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (4, 4, 1))
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 4, 4, 1)))
    _, stats = jax.jit(model.forward_stats)(params, x)
    # conv0 by hand: 3x3, padding 1, no bias, then mean / biased var over (B, H, W).
    w = np.asarray(params["conv0"]["w"])
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((3, 4, 4, 2))
    for i in range(4):
        for j in range(4):
            out[:, i, j] = np.einsum("bhwc,hwco->bo", xp[:, i:i + 3, j:j + 3], w)
    np.testing.assert_allclose(stats["conv0"]["mean"], out.mean((0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(stats["conv0"]["var"], out.var((0, 1, 2)), rtol=1e-4)
    # The normalised activation has mean 0 and variance var / (var + eps) per channel.
    y, s = jax.jit(resnet_bn.batch_norm)(params["conv0"]["norm"], jnp.asarray(out, jnp.float32))
    np.testing.assert_allclose(np.asarray(y).mean((0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y).var((0, 1, 2)),
                               s["var"] / (s["var"] + resnet_bn.BN_EPS), rtol=1e-4)
    logits, penalty = jax.eval_shape(model.forward, params, x, {})
    assert logits.shape == (3, 3) and penalty.shape == ()
    with pytest.raises(ValueError, match="noise has keys"):
        model.forward(params, x, {"dropout": {}})


def test_running_statistics_follow_pytorch():
    model = resnet_bn.bn_cnn(num_classes=2, width=1, conv_impl="lax")
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (2, 2, 1))
    a = np.asarray(jax.random.normal(jax.random.key(1), (2, 2, 2, 1)))
    b = 3.0 + a[::-1] ** 2
    fwd = jax.jit(model.forward_stats)
    _, sa = fwd(params, a)
    _, sb = fwd(params, b)
    n = 2 * 2 * 2  # batch x H x W at conv0 (stride 1)
    # Momentum 0.1 from (0, 1): 0.9 * (0.9 * 0 + 0.1 m_a) + 0.1 m_b; unbiased variance.
    run = resnet_bn.estimate_running_stats(model, params, [a, b], momentum=0.1)
    sa, sb = jax.tree.map(np.asarray, (sa, sb))
    m = 0.09 * sa["conv0"]["mean"] + 0.1 * sb["conv0"]["mean"]
    v = 0.81 + (0.09 * sa["conv0"]["var"] + 0.1 * sb["conv0"]["var"]) * n / (n - 1)
    np.testing.assert_allclose(run["conv0"]["mean"], m, rtol=1e-5)
    np.testing.assert_allclose(run["conv0"]["var"], v, rtol=1e-5)
    # The cumulative average (momentum None) forgets the initial (0, 1).
    avg = resnet_bn.estimate_running_stats(model, params, [a, b])
    np.testing.assert_allclose(avg["conv0"]["mean"],
                               (sa["conv0"]["mean"] + sb["conv0"]["mean"]) / 2, rtol=1e-5)
