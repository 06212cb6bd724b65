"""CVB's fused formulation (one conv for mu and sigma, 1x1 decoder as a matmul) computes
the plain one's function: values, gradients and the double backward the attacks take."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi.models import bottleneck as vb


def _setup(channels=16, size=6, kernel=5):
    k = vb.cvb_latent_channels(channels)
    params = vb.cvb_init(jax.random.key(0), channels, kernel)
    x = jax.random.normal(jax.random.key(1), (2, size, size, channels))
    eps = jax.random.normal(jax.random.key(2), (2, size, size, k))
    r = jax.random.normal(jax.random.key(3), (2, size, size, channels))
    return params, x, eps, r


def _loss(params, x, eps, r, fused):
    out, pen = vb.cvb_apply(params, x, eps, 0.1, fused=fused)
    return jnp.sum(out * r) + pen


def test_fused_cvb_equals_plain_to_second_order():
    fused = True
    params, x, eps, r = _setup()
    target = jax.tree.map(jnp.ones_like, params)

    def attack_objective(x, eps, fused):
        # The attacks' shape: a distance between the parameter gradient and a target,
        # differentiated w.r.t. the input and the noise (a double backward).
        g = jax.grad(_loss)(params, x, eps, r, fused)
        return sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g),
                                                   jax.tree.leaves(target), strict=True))

    plain = jax.jit(lambda x, e: (
        _loss(params, x, e, r, False), jax.grad(_loss, argnums=(0, 1, 2))(params, x, e, r,
                                                                          False),
        jax.grad(attack_objective, argnums=(0, 1))(x, e, False)))
    new = jax.jit(lambda x, e: (
        _loss(params, x, e, r, fused), jax.grad(_loss, argnums=(0, 1, 2))(params, x, e, r,
                                                                          fused),
        jax.grad(attack_objective, argnums=(0, 1))(x, e, fused)))
    # float32 rounding only: measured max abs difference ~1e-6 on values of order 10-100.
    for a, b in zip(jax.tree.leaves(plain(x, eps)), jax.tree.leaves(new(x, eps)),
                    strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-4)


def test_fused_cvb_refuses_a_wrong_eps_shape():
    params, x, eps, _ = _setup()
    with pytest.raises(ValueError, match="eps of shape"):
        vb.cvb_apply(params, x, eps[:, :3], 0.1, fused=True)
