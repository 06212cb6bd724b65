import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jgi.defenses import pruning


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.3]),
       n=st.sampled_from([1, 2, 7, 64, 333, 500]))
def test_pruned_fraction_per_layer_is_exactly_p(seed, fraction, n):
    k1, k2 = jax.random.split(jax.random.key(seed))
    update = {"w": jax.random.normal(k1, (n, 3)), "b": jax.random.normal(k2, (n,))}
    pruned = pruning.prune(update, fraction)
    for name, g in update.items():
        p = np.asarray(pruned[name])
        assert np.sum(p == 0) == int(fraction * g.size)
        kept = np.abs(np.asarray(g))[p != 0]
        dropped = np.abs(np.asarray(g))[p == 0]
        if kept.size and dropped.size:
            assert dropped.max() <= kept.min()  # the smallest magnitudes go
        np.testing.assert_array_equal(p[p != 0], np.asarray(g)[p != 0])  # kept entries intact


def test_ties_are_broken_by_position():
    g = jnp.array([1.0, -1.0, 1.0, 2.0, -1.0, 3.0])
    np.testing.assert_array_equal(pruning.prune({"g": g}, 0.5)["g"], [0, 0, 0, 2.0, -1.0, 3.0])


def test_observed_mask_reveals_the_clients_mask_and_transform_matches():
    update = {"w": jax.random.normal(jax.random.key(0), (40, 10))}
    mask = pruning.pruning_mask(update, 0.9)
    pruned = pruning.prune(update, 0.9)
    chex.assert_trees_all_equal(pruning.observed_mask(pruned), mask)
    tx = pruning.prune_by_magnitude(0.9)
    out, _ = tx.update(update, tx.init(update))
    chex.assert_trees_all_equal(out, pruned)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pruning.prune_by_magnitude(1.0)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.sampled_from([0.0, -0.0, 1e-30, 0.5, -0.5, 1.0, -2.0, 3.0,
                                        float("inf")]), min_size=24, max_size=24),
       fraction=st.sampled_from([0.1, 0.5, 0.9, 0.99]))
def test_mask_equals_a_stable_sort_of_the_magnitudes_ties_included(values, fraction):
    g = np.asarray(values, np.float32)
    k = int(fraction * g.size)
    expected = np.ones(g.size, np.float32)
    expected[np.argsort(np.abs(g), kind="stable")[:k]] = 0
    np.testing.assert_array_equal(pruning.layer_mask(jnp.asarray(g), fraction), expected)


def test_gradients_flow_through_kept_entries_only():
    g = jnp.array([0.1, -3.0, 0.2, 4.0])
    grad = jax.grad(lambda u: jnp.sum(pruning.prune({"g": u}, 0.5)["g"]))(g)
    np.testing.assert_array_equal(grad, [0.0, 1.0, 0.0, 1.0])
