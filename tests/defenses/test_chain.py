"""The stack's gradient-level defenses as one optax chain."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import defenses, fl, models
from jgi.defenses import dp, pruning

SHAPE = (10, 10, 1)


def test_the_chain_on_per_example_gradients_is_the_client_update():
    stack = defenses.from_names("dp,prune", dp=defenses.DPConfig(clip_norm=0.5,
                                                                 noise_multiplier=0.1))
    model = models.get("cnn", channels=(4, 8))
    params = model.init(jax.random.key(0), SHAPE)
    x = jax.random.normal(jax.random.key(1), (3, *SHAPE))
    y = jnp.array([1, 2, 3])
    r = fl.sample_randomness(jax.random.key(2), model, params, stack, SHAPE, 3)
    tx = defenses.gradient_transform(stack)
    per_example = dp.PerExample(fl.per_example_gradients(model, params, x, y, {}))
    by_chain, _ = tx.update(per_example, tx.init(params), params, noise=r.dp)
    # The client takes the fused clipped-sum path for a batch of 3; same update.
    by_client = fl.client_update(model, params, x, y, r, stack)
    chex.assert_trees_all_close(by_chain, by_client, rtol=1e-4, atol=1e-7)
    by_hand = pruning.prune(dp.privatize(per_example.grads, stack.dp, r.dp), 0.5)
    chex.assert_trees_all_equal(by_chain, by_hand)


def test_without_dp_per_example_gradients_are_averaged_then_pruned():
    tx = defenses.gradient_transform(defenses.from_names("prune"))
    g = {"w": jnp.arange(12.0).reshape(3, 4)}
    out, _ = tx.update(dp.PerExample(g), tx.init(None))
    np.testing.assert_array_equal(out["w"], [0.0, 0.0, 6.0, 7.0])  # mean 4..7, half pruned
    mean, _ = tx.update({"w": jnp.array([4.0, 5.0, 6.0, 7.0])}, tx.init(None))
    np.testing.assert_array_equal(mean["w"], out["w"])


def test_a_chain_fed_the_wrong_form_says_what_it_needs():
    with_dp = defenses.gradient_transform(defenses.from_names("dp"))
    with pytest.raises(ValueError, match="clips each example's gradient"):
        with_dp.update({"w": jnp.ones(3)}, with_dp.init(None), noise={"w": jnp.zeros(3)})
    plain = defenses.gradient_transform(defenses.from_names("none"))
    with pytest.raises(ValueError, match="needs DP-SGD's noise stage"):
        plain.update(dp.ClippedSum({"w": jnp.ones(3)}, 2), plain.init(None))
    prune = pruning.prune_by_magnitude(0.5)
    with pytest.raises(ValueError, match="average \\(or privatise\\) the per-example"):
        prune.update(dp.PerExample({"w": jnp.ones((2, 3))}), prune.init(None))
