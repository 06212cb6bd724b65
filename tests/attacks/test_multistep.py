"""Multi-step IG: the attacker's simulation is the client's local training, and the
attack reconstructs a multi-step update in its working regime."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jgi import data, fl, metrics, models
from jgi.attacks import ig, multistep


def _max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_simulation_on_the_true_data_is_the_clients_local_training(mnist_sample):
    ds, info = mnist_sample, mnist_sample.info
    model = models.get("mlp", width=32)  # the CNN's compile alone takes 15 s here
    params = model.init(jax.random.key(0), info.image_shape)
    x = jnp.asarray(data.normalize(ds.x_train[:7], info))
    y = jnp.asarray(ds.y_train[:7])
    # 2 epochs of 3 steps (batches 3, 3, 1), momentum, weight decay, decayed lr (round 2).
    local = fl.LocalTraining(epochs=2, batch_size=3, lr=0.1, momentum=0.5,
                             weight_decay=1e-3, lr_decay=0.9)
    key = jax.random.key(5)

    def all_three(p):  # one compilation
        return (fl.observe(model, p, x, y, key, local=local, round_index=2),
                multistep.simulated_update(model, p, x, y, local, key, order="client",
                                           round_index=2),
                multistep.simulated_update(model, p, x, y, local, key, round_index=2))

    obs, sim, fixed = jax.jit(all_three)(params)
    scale = max(float(jnp.max(jnp.abs(u))) for u in jax.tree.leaves(obs.update))
    # Measured: identical (0.0) against updates up to 0.2.
    assert _max_abs_diff(obs.update, sim) <= 1e-6 * scale
    # The attacker's fixed order is a different training once the client reshuffles.
    assert _max_abs_diff(obs.update, fixed) > 1e-3 * scale


def test_setups_name_what_the_attacker_simulates():
    obs = fl.Observation(update={}, params={}, local=fl.LocalTraining(epochs=3, batch_size=4),
                         num_samples=10, round=1)
    assert multistep.consistent_setup(obs).num_steps == 9
    assert multistep.study_setup(obs, 2).num_steps == 3  # E full-batch steps
    assert multistep.single_step_setup(obs, 2).num_steps == 1
    with pytest.raises(ValueError, match="fewer than one batch"):
        multistep.AttackSetup(fl.LocalTraining(batch_size=4, drop_last=True), 3)


def test_multistep_ig_reconstructs_a_three_step_update(mnist_sample):
    ds, info = mnist_sample, mnist_sample.info
    model = models.get("mlp", width=32)
    params = model.init(jax.random.key(0), info.image_shape)
    n = 2
    # 3 full-batch steps: multi-step, and the batch order the attacker cannot know does
    # not matter (with B < n it does; see the module docstring).
    local = fl.LocalTraining(epochs=3, batch_size=None, lr=0.1)
    originals = ds.x_train[:n]
    x = jnp.asarray(data.normalize(originals, info))
    y = jnp.asarray(ds.y_train[:n])
    obs = multistep.stack_observations([jax.jit(
        lambda p: fl.observe(model, p, x, y, jax.random.key(10), local=local))(params)])
    cfg = ig.IGConfig(max_iters=40, lr=0.1, tv_weight=1e-2, chunk_size=20)
    result = multistep.reconstruct(model, obs, y[None], jax.random.key(3),
                                   multistep.consistent_setup(obs), cfg,
                                   input_shape=info.image_shape,
                                   bounds=data.input_bounds(info))
    rec = np.clip(data.denormalize(result.best["x"][0], info), 0, 1)
    # The client's order is unknown: each original is matched to one reconstruction.
    pairs = metrics.ssim(np.repeat(originals, n, 0), np.tile(rec, (n, 1, 1, 1))).reshape(n, n)
    rows, cols = linear_sum_assignment(-pairs)
    ssim = pairs[rows, cols]
    # Measured (2 CPU cores, seed 3): 0.750 0.923.
    assert ssim.min() > 0.5, ssim


def test_single_step_setup_with_one_dummy_is_igs_objective(mnist_sample):
    info = mnist_sample.info
    model = models.get("mlp", width=8)
    params = model.init(jax.random.key(0), info.image_shape)
    x = jnp.asarray(data.normalize(mnist_sample.x_train[:2], info))
    y = jnp.asarray(mnist_sample.y_train[:2])
    local = fl.LocalTraining(epochs=2, batch_size=1, lr=0.1)
    cfg = ig.IGConfig(tv_weight=0.01)

    def both(p):
        obs = fl.observe(model, p, x, y, jax.random.key(1), local=local)
        setup = multistep.single_step_setup(obs, 1)
        ours, _ = multistep.objective(model, setup, cfg, x[:1], y[:1], obs.update, p,
                                      jax.random.key(2))
        theirs, _ = ig.image_objective(model, cfg, x[0], {"target": obs.update,
                                                          "label": y[0]}, p,
                                       fl.ClientRandomness())
        return ours, theirs

    ours, theirs = jax.jit(both)(params)
    assert abs(float(ours) - float(theirs)) < 1e-5  # cosine ignores the lr factor
