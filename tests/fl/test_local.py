"""Local training and the server's observation of it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import defenses, fl, models
from jgi.fl import fedavg

SHAPE = (10, 10, 1)


def _model(stack):
    return models.get("cnn", channels=(4, 8), **stack.model_options())


def _client(n=7, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, *SHAPE)), jax.random.randint(ky, (n,), 0, 10)


def _by_hand(model, params, x, y, key, stack, epochs, b, lr, momentum):
    """The same SGD steps written out: shuffle, full batches, then the smaller last one."""
    n = x.shape[0]
    full = n // b
    velocity = jax.tree.map(jnp.zeros_like, params)
    for k_epoch in jax.random.split(key, epochs):
        k_perm, k_steps = jax.random.split(k_epoch)
        order = jax.random.permutation(k_perm, n)
        batches = [(order[j * b:(j + 1) * b], k)
                   for j, k in enumerate(jax.random.split(k_steps, full))]
        batches.append((order[full * b:], jax.random.fold_in(k_perm, 1)))
        for idx, k in batches:
            r = fl.sample_randomness(k, model, params, stack, SHAPE, idx.shape[0])
            g = fl.client_update(model, params, x[idx], y[idx], r, stack)
            velocity = jax.tree.map(lambda v, gi: momentum * v + gi, velocity, g)
            params = jax.tree.map(lambda p, v: p - lr * v, params, velocity)
    return params


@pytest.mark.parametrize("names", ["none", "dropout,dp,prune,cvb"])
def test_multi_step_observation_equals_a_hand_written_loop_of_sgd_steps(names):
    stack = defenses.from_names(names, dp=defenses.DPConfig(clip_norm=1.0,
                                                            noise_multiplier=0.01))
    model = _model(stack)
    params = model.init(jax.random.key(1), SHAPE)
    x, y = _client(n=5)
    local = fl.LocalTraining(epochs=2, batch_size=3, lr=0.05, momentum=0.9)
    assert local.num_steps(5) == 4  # a full batch of 3 and one of 2 per epoch
    obs = jax.jit(lambda p, k: fl.observe(model, p, x, y, k, stack, local))(
        params, jax.random.key(2))
    # Jitted like the observation, so XLA rounds both alike (pruning's ranking of
    # near-equal magnitudes would otherwise amplify last-bit differences).
    expected = jax.jit(lambda p, k: _by_hand(model, p, x, y, k, stack, 2, 3, 0.05, 0.9))(
        params, jax.random.key(2))
    delta = jax.tree.map(jnp.subtract, params, expected)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                 obs.update, delta)
    assert obs.kind == "weight_delta" and obs.num_samples == 5
    jax.tree.map(np.testing.assert_array_equal, obs.params, params)
    with pytest.raises(ValueError, match="one image's one-step gradient"):
        obs.require_single_gradient("CDIA")


def test_fedavg_client_update_is_the_observed_local_training():
    """One FedAvg round of one client: the new global params are W_t minus its observation."""
    stack = defenses.from_names("dropout,prune")
    model = _model(stack)
    cfg = fedavg.FedAvgConfig(rounds=1, batch_size=4, optimizer_name="adam", lr=1e-2)
    x, y = _client(n=10)
    params = model.init(jax.random.key(0), SHAPE)
    round_fn = jax.jit(fedavg.make_round(model, stack, cfg, SHAPE, 10, 1))
    new_params, _, _ = round_fn(params, fedavg.client_opt_states(cfg, params, 1), x[None],
                                y[None], jax.random.key(5))
    client_key = jax.random.split(jax.random.key(5), 1)[0]
    obs = jax.jit(lambda p: fl.observe(model, p, x, y, client_key, stack,
                                       cfg.local_training()))(params)
    assert cfg.local_training().num_steps(10) == 2  # drop_last, as FedAvg trains
    jax.tree.map(lambda a, b, d: np.testing.assert_allclose(a, b - d, rtol=1e-5, atol=1e-6),
                 new_params, params, obs.update)


def test_one_step_observation_is_the_client_update_with_the_keys_randomness():
    stack = defenses.from_names("dropout,dp,prune")
    model = _model(stack)
    params = model.init(jax.random.key(0), SHAPE)
    x, y = _client(n=1)
    obs = fl.observe(model, params, x, y, jax.random.key(3), stack)
    r = fl.sample_randomness(jax.random.key(3), model, params, stack, SHAPE, 1)
    jax.tree.map(np.testing.assert_array_equal, obs.update,
                 fl.client_update(model, params, x, y, r, stack))
    assert obs.kind == "gradient"
    obs.require_single_gradient("CDIA")  # accepted
    # An Observation is a pytree: it passes through jit with its facts static.
    doubled = jax.jit(lambda o: jax.tree.map(lambda a: 2 * a, o))(obs)
    assert doubled.local == fl.ONE_STEP and doubled.num_samples == 1
    with pytest.raises(ValueError, match="takes one step on its whole batch"):
        fl.observe(model, params, *_client(n=4), jax.random.key(0), stack,
                   fl.LocalTraining(batch_size=2, shares="gradient"))


@pytest.mark.parametrize("encoding", ["mixup", "instahide"])
def test_an_input_encoding_trains_inside_every_local_step(encoding):
    x, y = _client(n=8)
    plain, mixup = defenses.from_names("none"), defenses.from_names(encoding)
    model = _model(plain)
    params = model.init(jax.random.key(0), SHAPE)
    local = fl.LocalTraining(epochs=1, batch_size=4, lr=0.1)
    a = fl.observe(model, params, x, y, jax.random.key(1), plain, local)
    b = fl.observe(model, params, x, y, jax.random.key(1), mixup, local)
    assert not np.allclose(jax.tree.leaves(a.update)[0], jax.tree.leaves(b.update)[0])
    again = fl.observe(model, params, x, y, jax.random.key(1), mixup, local)
    jax.tree.map(np.testing.assert_array_equal, b.update, again.update)


def test_bad_local_training_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam"):
        fl.LocalTraining(optimizer="lbfgs")
    with pytest.raises(ValueError, match="shares its weight change"):
        fl.LocalTraining(epochs=2, shares="gradient")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fl.LocalTraining(batch_size=0)
