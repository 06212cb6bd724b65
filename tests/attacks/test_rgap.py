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
    model = models.get("cnn6")
    x = jnp.asarray(cifar_sample.x_train[:2, 10:14, 10:14])  # real 4x4x3 crops in [0, 1]
    params = model.init(jax.random.key(0), (4, 4, 3))
    signs = rgap.flipped_signs(model, params, x)
    grads = jax.vmap(lambda xi, si: rgap.client_gradient(model, params, xi[None], si[None]))(
        x, signs)
    res = rgap.recover_victims(model, params, grads, signs, (4, 4, 3))
    # Measured MSE 4e-14 and 9e-14 (float32); every layer at full rank.
    assert float(jnp.max(jnp.mean((res.image - x) ** 2, axis=(1, 2, 3)))) < 1e-9
    np.testing.assert_array_equal(res.ranks, res.unknowns)
