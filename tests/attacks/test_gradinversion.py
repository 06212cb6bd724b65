"""GradInversion: Yin's label rule, the objective falls, the BatchNorm term is matched."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi.attacks import gradinversion as gi
from jgi.fl.client import client_update
from jgi.models import resnet_bn

SHAPE = (6, 6, 1)


@pytest.fixture(scope="module")
def setup():
    model = resnet_bn.bn_cnn(num_classes=5, width=4, conv_impl="lax")
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), SHAPE)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (2, 3, *SHAPE)))
    y = np.asarray([[4, 1, 2], [0, 3, 1]], np.int32)
    updates = jax.jit(jax.vmap(lambda a, b: client_update(model, params, a, b)))(x, y)
    running = resnet_bn.estimate_running_stats(model, params, [x.reshape(-1, *SHAPE)])
    return model, params, x, y, updates, running


def test_yin_labels_recover_distinct_labels(setup):
    model, _, _, y, updates, _ = setup
    labels = np.asarray(jax.jit(jax.vmap(lambda u: gi.yin_labels(u, model.classifier, 3)))(
        updates))
    assert [sorted(v) for v in labels] == [sorted(v) for v in y]
    with pytest.raises(ValueError, match="distinct labels"):
        gi.yin_labels(jax.tree.map(lambda a: a[0], updates), model.classifier, 6)


def test_objective_and_bn_term_fall_for_every_victim(setup):
    model, params, x, y, updates, running = setup
    config = gi.GradInversionConfig(max_iters=60, warmup=5, num_groups=2, chunk_size=60,
                                    grad_scale=1.0)
    problem = gi.problem(model, SHAPE, 3, config)
    context = {"params": params, "running": running, "bounds": (0.0, 1.0)}
    victims = {"target": updates, "labels": jnp.asarray(y)}
    result = gi.reconstruct(model, params, running, updates, y, jax.random.key(3), config,
                            input_shape=SHAPE, bounds=(0.0, 1.0))
    start = jax.vmap(lambda k, v: problem.init(k, v, context))(
        jax.random.split(jax.random.key(9), 2), victims)

    def terms(cand):
        return jax.vmap(lambda c, v: problem.objective(c, v, context, None))(cand, victims)

    (l0, a0), (l1, a1) = jax.jit(terms)(start), jax.jit(terms)(result.best)
    assert result.best["x"].shape == (2, 2, 3, *SHAPE)
    assert gi.consensus(result).shape == (2, 3, *SHAPE)
    assert float(np.max(result.best["x"])) <= 1.0 and float(np.min(result.best["x"])) >= 0.0
    # Measured (CPU, 60 steps): the loss fell 75.8 -> 21.3 and 65.8 -> 16.1 (3.6x, 4.1x),
    # the BN term 1.59 -> 0.54 and 1.73 -> 0.68 (2.9x, 2.5x) from a fresh random start;
    # asserted: 2.5x for the loss and 2x for the BN term.
    assert np.all(np.asarray(l1) < np.asarray(l0) / 2.5), (l0, l1)
    assert np.all(np.asarray(a1["bn"]) < np.asarray(a0["bn"]) / 2), (a0["bn"], a1["bn"])


def test_config_says_what_is_wrong():
    with pytest.raises(ValueError, match="distance"):
        gi.GradInversionConfig(distance="l1")
    with pytest.raises(ValueError, match="warmup"):
        gi.GradInversionConfig(max_iters=10, warmup=10)
    with pytest.raises(ValueError, match="bn_weight"):
        gi.GradInversionConfig(bn_weight=-1)
