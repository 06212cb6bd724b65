"""End-to-end Inverting Gradients on real MNIST victims (embedded sample)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import data, fl, metrics, models
from jgi.attacks import ig, runner


def _victims(ds, seed, n):
    key = jax.random.key(seed)
    split = fl.iid_split(jax.random.fold_in(key, 0), len(ds.y_train))
    idx = fl.sample_victims(jax.random.fold_in(key, 1), split, n)
    return idx, jax.random.fold_in(key, 2), jax.random.fold_in(key, 3)


def _attack(model, params, updates, labels, info, key):
    # A compressed schedule (plateau after 100, at most 500 iterations) to stay in seconds.
    cfg = ig.IGConfig(max_iters=500, plateau_patience=100, stop_patience=300)
    return ig.reconstruct(model, params, updates, labels, key, cfg, input_shape=info.image_shape,
                          bounds=data.input_bounds(info), progress=False)


@pytest.mark.slow
def test_ig_reconstructs_mnist_victims_and_fails_on_the_wrong_update(mnist_sample):
    ds, info = mnist_sample, mnist_sample.info
    idx, k_model, k_attack = _victims(ds, seed=0, n=4)
    originals = ds.x_train[idx]
    x = jnp.asarray(data.normalize(originals, info))
    y = jnp.asarray(ds.y_train[idx])
    model = models.get("cnn")
    params = model.init(k_model, info.image_shape)
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, {}))(params)

    result = _attack(model, params, updates, y, info, k_attack)
    ssim = metrics.ssim(originals, np.clip(data.denormalize(result.best["x"], info), 0, 1))
    # Measured on 2 CPU cores (seed 0): 0.959 0.922 0.919 0.860.
    assert ssim.min() > 0.8 and ssim.mean() > 0.9, ssim
    assert np.all(result.iterations <= 500)

    # Control: each dummy matched to another victim's update must not resemble its victim.
    wrong = jax.tree.map(lambda a: jnp.roll(a, 1, axis=0), updates)
    control = _attack(model, params, wrong, jnp.roll(y, 1), info, k_attack)
    control_ssim = metrics.ssim(originals,
                                np.clip(data.denormalize(control.best["x"], info), 0, 1))
    # Measured: 0.185 0.106 0.012 0.010.
    assert control_ssim.max() < 0.3, control_ssim


def test_box_constraint_keeps_reconstructions_valid(mnist_sample):
    info = mnist_sample.info
    model = models.get("cnn")
    params = model.init(jax.random.key(0), info.image_shape)
    x = jnp.asarray(data.normalize(mnist_sample.x_train[:2], info))
    y = jnp.asarray(mnist_sample.y_train[:2])
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, {}))(params)
    cfg = ig.IGConfig(max_iters=20, chunk_size=10)
    result = ig.reconstruct(model, params, updates, y, jax.random.key(1), cfg,
                            input_shape=info.image_shape, bounds=data.input_bounds(info),
                            progress=False)
    pixels = data.denormalize(result.best["x"], info)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert set(runner.STOP_REASONS[r] for r in result.stop_reason) == {"max_iters"}


def test_config_errors_are_explained():
    with pytest.raises(ValueError, match="cosine, l2"):
        ig.IGConfig(distance="manhattan")
    with pytest.raises(ValueError, match="max_iters must be >= 1"):
        ig.IGConfig(max_iters=0).stopping()
