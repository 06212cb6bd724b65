"""R-GAP: exact on CNN6 at a tiny input, the rank analysis flags CNN6-d."""

import jax
import jax.numpy as jnp
import numpy as np

from jgi import models
from jgi.attacks import rgap


def test_rank_analysis_flags_cnn6d_conv1_at_32x32_and_not_cnn6():
    full = rgap.rank_analysis(models.get("cnn6"), (32, 32, 3))
    deficient = rgap.rank_analysis(models.get("cnn6d"), (32, 32, 3))
    assert not any(r.deficient for r in full)
    assert [r.layer for r in deficient if r.deficient] == ["conv1"]
    conv1 = deficient[1]
    # 17x17x12 unknowns; 9x9x20 forward + (108 - 20) * 20 new gradient constraints
    assert (conv1.unknowns, conv1.forward, conv1.new_gradient, conv1.bound) == (
        3468, 1620, 1760, 3380)


def test_margin_root_is_on_the_monotone_branch():
    u = jnp.asarray([-8.0, -1.0, -1e-4, 0.5])
    v = -u * jax.nn.sigmoid(-u)
    np.testing.assert_allclose(jax.vmap(rgap.solve_margin)(v), u, rtol=1e-4, atol=1e-5)


def test_exact_on_cnn6_at_a_tiny_input(cifar_sample):
    # One victim, jitted whole (compiling the vmapped version costs ~1.5x more;
    # experiments.analytic and the benchmark run it vmapped).
    model = models.get("cnn6")
    x = jnp.asarray(cifar_sample.x_train[:1, 10:14, 10:14])  # a real 4x4x3 crop in [0, 1]
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (4, 4, 3))

    @jax.jit
    def attack(params, x):
        sign = rgap.flipped_signs(model, params, x)
        grad = rgap.client_gradient(model, params, x, sign)
        return rgap.recover(model, params, grad, sign[0], (4, 4, 3), with_ranks=False)

    res = attack(params, x)
    # Measured MSE 1.7e-13 (float32); the numerical ranks (full) are skipped here, they
    # cost an eigendecomposition per layer to compile (experiments.analytic prints them).
    assert float(jnp.mean((res.image - x[0]) ** 2)) < 1e-9
    assert not any(r.deficient for r in rgap.rank_analysis(model, (4, 4, 3)))
    np.testing.assert_array_equal(res.ranks, -1)


def test_rank_analysis_at_batch_above_one():
    model = models.get("cnn6")

    def deficient(b):
        return [r.layer for r in rgap.rank_analysis(model, (32, 32, 3), b) if r.deficient]

    # The linear layer's gradient mixes the batch's features from B = 2 on; given the
    # features, conv1 (17x17x12 unknowns, 9x9x36 forward per example, (108 - 36) * 36
    # shared new gradient equations) holds up to B = 4 (4 * 552 <= 2592 < 5 * 552) and
    # conv4 up to B = 12 (1316 B against (324 - 64) * 64 = 16640).
    assert deficient(1) == []
    assert deficient(2) == deficient(4) == ["fc"]
    assert deficient(5) == ["conv1", "fc"]
    assert deficient(13) == ["conv1", "conv4", "fc"]
    fc = rgap.rank_analysis(model, (32, 32, 3), 2)[-1]
    assert (fc.unknowns, fc.bound) == (2 * 3200, 3200)


def test_recursion_from_the_features_recovers_a_batch_of_two(cifar_sample):
    model = models.get("cnn6")
    x = jnp.asarray(cifar_sample.x_train[:2, 10:14, 10:14])
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (4, 4, 3))

    @jax.jit
    def attack(params, x):
        signs = rgap.flipped_signs(model, params, x)
        grad = rgap.client_gradient(model, params, x, signs)
        feats = rgap.features(model, params, x)
        return rgap.recover_from_features(model, params, grad, signs, feats, (4, 4, 3),
                                          with_ranks=False)

    res = attack(params, x)
    # Measured MSE ~1e-12 (8x8: 1.7e-12 at B = 2, 2.4e-12 at B = 3, with full ranks).
    assert res.image.shape == (2, 4, 4, 3)
    assert float(jnp.mean((res.image - x) ** 2)) < 1e-8
