import functools

import chex
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
    chex.assert_trees_all_equal_shapes_and_dtypes(update, params)
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
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched), single,
                                    rtol=1e-5, atol=1e-6)


@functools.lru_cache(maxsize=1)
def _small_victims():
    """A small MLP, three victims and their updates one by one (jitted), computed once."""
    shape = (6, 6, 3)
    model = models.get("mlp", width=16)
    params = model.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (3, *shape))
    y = jnp.array([1, 2, 3])
    single = jax.jit(lambda a, b: fl.client_update(model, params, a, b, {}))
    singles = [single(x[i:i + 1], y[i:i + 1]) for i in range(3)]
    return model, params, x, y, jax.tree.map(lambda *u: jnp.stack(u), *singles)


class VictimUpdatesJitOrNot(chex.TestCase):
    """chex.variants runs the test once jitted and once not."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmapped_victim_updates_equal_single_updates(self):
        model, params, x, y, singles = _small_victims()
        batched = self.variant(lambda p, a, b: fl.victim_updates(model, p, a, b, {}))(
            params, x, y)
        chex.assert_trees_all_close(batched, singles, rtol=1e-5, atol=1e-6)


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
    chex.assert_trees_all_equal(out, update(params, r))  # deterministic
    # By hand: per-example gradients with the same masks/eps, clip, sum, + Xi, / 3, prune.
    per_ex = jax.jit(lambda p: fl.per_example_gradients(model, p, x, y, r.model))(params)
    by_hand = pruning.prune(dp.privatize(per_ex, stack.dp, r.dp), 0.5)
    chex.assert_trees_all_close(out, by_hand, rtol=1e-4, atol=1e-7)
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

    chex.assert_trees_all_close(jax.jit(by_client)(x), jax.jit(by_privatize)(x),
                                rtol=1e-5, atol=1e-7)
    # An attacker's gradient with respect to the input sees the clipping factors too.
    probe = jax.tree.map(lambda a: jax.random.normal(jax.random.key(4), a.shape), params)

    def scalar(f):
        return jax.jit(jax.grad(lambda xs: sum(
            jnp.vdot(u, v)
            for u, v in zip(jax.tree.leaves(f(xs)), jax.tree.leaves(probe), strict=True))))

    np.testing.assert_allclose(scalar(by_client)(x), scalar(by_privatize)(x),
                               rtol=1e-4, atol=1e-6)
