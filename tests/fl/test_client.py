import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def _dp_client(names, clip_norm):
    """A stack with DP (sigma 1e-2) on the MNIST CNN, three random examples, their randomness."""
    from jgi import defenses
    stack = defenses.from_names(
        names, dp=defenses.DPConfig(clip_norm=clip_norm, noise_multiplier=1e-2))
    model = models.get("cnn", **stack.model_options())
    params = model.init(jax.random.key(0), (28, 28, 1))
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    y = jnp.array([1, 2, 3])
    r = fl.sample_randomness(jax.random.key(2), model, params, stack, (28, 28, 1), 3)
    return stack, model, params, x, y, r


def test_defended_update_is_prune_of_dp_of_grad_with_explicit_randomness():
    from jgi.defenses import dp, pruning
    stack, model, params, x, y, r = _dp_client("dropout,dp,prune,cvb", clip_norm=0.5)
    update = jax.jit(lambda p, r: fl.client_update(model, p, x, y, r, stack))
    out = update(params, r)
    jax.tree.map(np.testing.assert_array_equal, out, update(params, r))  # deterministic
    # By hand: per-example gradients with the same masks/eps, clip, sum, + Xi, / 3, prune.
    per_ex = jax.jit(lambda p: fl.per_example_gradients(model, p, x, y, r.model))(params)
    by_hand = pruning.prune(dp.privatize(per_ex, stack.dp, r.dp), 0.5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                 out, by_hand)
    for leaf in jax.tree.leaves(out):
        assert int(jnp.sum(leaf == 0)) >= int(0.5 * leaf.size)
    # Other randomness, other update.
    r2 = fl.sample_randomness(jax.random.key(3), model, params, stack, (28, 28, 1), 3)
    assert not np.allclose(out["conv0"]["w"], update(params, r2)["conv0"]["w"])


def test_dp_without_noise_is_refused():
    from jgi import defenses
    model, params, x, y = _setup(n=1)
    with pytest.raises(ValueError, match="randomness.dp is None"):
        fl.client_update(model, params, x, y, fl.ClientRandomness(), defenses.from_names("dp"))


def test_batched_dp_clips_like_privatize_and_differentiates_through_the_clipping():
    from jgi.defenses import dp
    stack, model, params, x, y, r = _dp_client("dp,cvb", clip_norm=1.0)
    norms = dp.global_norms(fl.per_example_gradients(model, params, x, y, r.model))
    assert float(jnp.min(norms)) > 1.0  # every example is clipped

    def by_privatize(xs):
        return dp.privatize(fl.per_example_gradients(model, params, xs, y, r.model),
                            stack.dp, r.dp)

    def by_client(xs):
        return fl.client_update(model, params, xs, y, r, stack)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 jax.jit(by_client)(x), jax.jit(by_privatize)(x))
    # An attacker's gradient with respect to the input sees the clipping factors too.
    probe = jax.tree.map(lambda a: jax.random.normal(jax.random.key(4), a.shape), params)

    def scalar(f):
        return jax.jit(jax.grad(lambda xs: sum(
            jnp.vdot(u, v)
            for u, v in zip(jax.tree.leaves(f(xs)), jax.tree.leaves(probe), strict=True))))

    np.testing.assert_allclose(scalar(by_client)(x), scalar(by_privatize)(x),
                               rtol=1e-4, atol=1e-6)
