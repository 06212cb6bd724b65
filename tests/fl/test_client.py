import jax
import jax.numpy as jnp
import numpy as np

from jgi import fl, models


def _setup(shape=(28, 28, 1), n=4):
    model = models.get("cnn")
    params = model.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (n, *shape))
    y = jnp.arange(n) % 10
    return model, params, x, y


def test_update_has_the_params_structure_and_is_the_loss_gradient():
    model, params, x, y = _setup(n=1)
    update = jax.jit(lambda p: fl.client_update(model, p, x, y, {}))(params)
    assert jax.tree.structure(update) == jax.tree.structure(params)
    # Finite-difference check on one bias entry.
    eps = 1e-3
    bumped = jax.tree.map(lambda p: p, params)
    bumped["dense"] = {**params["dense"], "b": params["dense"]["b"].at[2].add(eps)}
    loss = jax.jit(lambda p: fl.client_loss(model, p, x, y, {}))
    fd = (loss(bumped) - loss(params)) / eps
    np.testing.assert_allclose(update["dense"]["b"][2], fd, rtol=1e-2, atol=1e-4)


def test_vmapped_victim_updates_equal_a_loop_over_victims():
    model, params, x, y = _setup(n=4)
    batched = jax.jit(lambda p: fl.victim_updates(model, p, x, y, {}))(params)
    single_update = jax.jit(lambda p, a, b: fl.client_update(model, p, a, b, {}))
    for i in range(4):
        single = single_update(params, x[i:i + 1], y[i:i + 1])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                     batched, single)


def test_jit_equals_no_jit():
    model, params, x, y = _setup(shape=(32, 32, 3), n=3)
    eager = fl.victim_updates(model, params, x, y, {})
    jitted = jax.jit(lambda p, a, b: fl.victim_updates(model, p, a, b, {}))(params, x, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 eager, jitted)
