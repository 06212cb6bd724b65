"""Shape/dtype checks at the public API boundaries (jgi.checks over chex).

A wrong input to ``client_update``, ``cdia.reconstruct`` and a model's ``apply`` raises
an error naming the argument, the expected and the given shape; the checks run at
trace time only (the jitted program is the same) and see per-example shapes under vmap.
Tiny MLP (4x4x1 inputs) so nothing here compiles for long.
"""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import pytest

from jgi import checks, defenses, fl, models
from jgi.attacks import cdia, ig
from jgi.fl.client import client_gradient

SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def mlp():
    model = models.get("mlp", width=8)
    return model, model.init(jax.random.key(0), SHAPE)


def _says(*parts):
    """A regex matching every part, in order, anywhere in the message."""
    return ".*".join(re.escape(p) for p in parts)


def test_a_models_apply_names_x_and_both_shapes(mlp):
    model, params = mlp
    with pytest.raises(ValueError, match=_says("mlp.forward: x must have rank 4",
                                               "(batch, H, W, C)", "got shape (4, 4, 1)")):
        model.apply(params, jnp.zeros(SHAPE), {})
    with pytest.raises(ValueError, match=_says("x must have H * W * C = 16", "mlp.hidden",
                                               "(16, 8)", "got (2, 5, 4, 1)")):
        model.apply(params, jnp.zeros((2, 5, 4, 1)), {})
    with pytest.raises(TypeError, match=_says("x must have a floating-point dtype",
                                              "got int32 of shape (2, 4, 4, 1)")):
        model.apply(params, jnp.zeros((2, *SHAPE), jnp.int32), {})
    cnn = models.get("cnn", channels=(2, 2))
    cnn_params = jax.eval_shape(lambda: cnn.init(jax.random.key(0), (8, 8, 3)))
    with pytest.raises(ValueError, match=_says("cnn.forward: x must be (batch, H, W, C)",
                                               "first layer cnn.conv0 (kernel (5, 5, 3, 2))",
                                               "expected x of shape (batch, H, W, 3)",
                                               "got (1, 8, 8, 1)")):
        jax.eval_shape(cnn.apply, cnn_params, jnp.zeros((1, 8, 8, 1)), {})


def test_client_update_names_the_argument_and_both_shapes(mlp):
    model, params = mlp
    x, y = jnp.zeros((2, *SHAPE)), jnp.array([1, 2])
    with pytest.raises(ValueError, match=_says("client_update: x must have rank 4",
                                               "got shape (4, 4, 1)")):
        fl.client_update(model, params, x[0], y)
    with pytest.raises(ValueError, match=_says("client_update: x and y must agree on the "
                                               "batch size", "x.shape[0] = 2",
                                               "(2, 4, 4, 1)", "y.shape[0] = 3", "(3,)")):
        fl.client_update(model, params, x, jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match=_says("y must have an integer dtype",
                                              "got float32 of shape (2,)")):
        fl.client_update(model, params, x, jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=_says("y must have shape (*, 10)",
                                               "classifier has 10 classes",
                                               "got shape (2, 7)")):
        fl.client_update(model, params, x, jnp.ones((2, 7)) / 7)
    with pytest.raises(ValueError, match="client_gradient: x must have rank 4"):
        client_gradient(model, params, x[0], y, fl.ClientRandomness())


def test_cdia_reconstruct_names_updates_labels_and_both_shapes(mlp):
    model, params = mlp
    y = jnp.array([1, 2])
    updates = jax.tree.map(lambda p: jnp.zeros((2, *p.shape)), params)  # 2 victims' shapes
    run = dict(key=jax.random.key(2), stack=defenses.NO_DEFENSE,
               config=ig.IGConfig(max_iters=2), input_shape=SHAPE, progress=False)
    with pytest.raises(ValueError, match=_says(
            "cdia.reconstruct: updates['dense']['b'] must have shape (3, 10)",
            "params['dense']['b'] has shape (10,)", "labels has 3 victims",
            "got shape (2, 10)")):
        cdia.reconstruct(model, params, updates, jnp.array([1, 2, 3]), **run)
    one = jax.tree.map(lambda u: u[0], updates)  # the victim axis forgotten
    with pytest.raises(ValueError, match=_says("updates['dense']['b'] must have shape (2, 10)",
                                               "got shape (10,)")):
        cdia.reconstruct(model, params, one, y, **run)
    with pytest.raises(ValueError, match="updates must have the structure of params"):
        cdia.reconstruct(model, params, {"dense": updates["dense"]}, y, **run)


def test_checks_are_trace_time_only_and_see_per_example_shapes_under_vmap(mlp):
    model, params = mlp
    x = jnp.zeros((2, *SHAPE))
    # The checked forward traces to the same program as the unchecked one: no cost.
    assert str(jax.make_jaxpr(model.forward)(params, x, {})) == \
        str(jax.make_jaxpr(model.forward.__wrapped__)(params, x, {}))
    # Under jit(vmap) over victims each call sees one victim's batch (1, 4, 4, 1);
    # eval_shape traces the jitted function as a call would, without compiling it.
    xs, ys = jnp.zeros((3, 1, *SHAPE)), jnp.zeros((3, 1), jnp.int32)
    one = jax.jit(jax.vmap(lambda a, b: fl.client_update(model, params, a, b)))
    out = jax.eval_shape(one, xs, ys)
    chex.assert_trees_all_equal_structs(out, params)
    chex.assert_tree_shape_prefix(out, (3,))
    with pytest.raises(ValueError, match=_says("client_update: x must have rank 4",
                                               "got shape (4, 4, 1)")):  # per victim
        jax.eval_shape(one, xs[:, 0], ys[:, 0])


def test_the_helpers_name_the_first_differing_leaf():
    ref = {"a": jnp.zeros((2,)), "b": {"c": jnp.zeros((3, 4))}}
    checks.tree_like(jax.tree.map(lambda r: jnp.zeros((5, *r.shape)), ref), ref,
                     name="u", reference_name="p", where="f", leading=(5,))
    bad = {"a": jnp.zeros((5, 2)), "b": {"c": jnp.zeros((5, 4, 3))}}
    with pytest.raises(ValueError, match=_says("f: u['b']['c'] must have shape (5, 3, 4)",
                                               "got shape (5, 4, 3)")):
        checks.tree_like(bad, ref, name="u", reference_name="p", where="f", leading=(5,))
    with pytest.raises(ValueError, match=_says("f: v must have rank 1 or 2",
                                               "got shape ()")):
        checks.rank(jnp.float32(1.0), {1, 2}, name="v", where="f")
