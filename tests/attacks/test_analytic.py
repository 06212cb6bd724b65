"""Analytic dense-layer recovery (Phong et al. 2017): exact at batch 1, mixtures above."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import data, fl, models
from jgi.attacks import analytic


@pytest.fixture(scope="module")
def mlp_case(mnist_sample):
    model = models.get("mlp")
    shape = mnist_sample.info.image_shape
    params = model.init(jax.random.key(0), shape)
    x = jnp.asarray(data.normalize(mnist_sample.x_train[:4], mnist_sample.info))
    y = jnp.asarray(mnist_sample.y_train[:4])
    assert len(set(np.asarray(y).tolist())) == 4  # unique labels (5, 0, 4, 1)
    grad = jax.jit(lambda x, y: fl.client_update(model, params, x, y))
    singles = jax.jit(jax.vmap(lambda xi, yi: fl.client_update(model, params, xi[None],
                                                                  yi[None])))(x, y)
    return model, params, x, y, shape, grad(x, y), singles


def test_batch_one_image_is_exact_and_vmap_equals_loop(mlp_case):
    model, params, x, y, shape, _, updates = mlp_case
    rec = analytic.recover_victims(model, updates, shape)
    # Measured max MSE 3e-14 (float32 rounding of a ratio); 1e-10 leaves margin.
    mse = jnp.mean((rec - x) ** 2, axis=(1, 2, 3))
    assert float(mse.max()) < 1e-10, mse
    loop = jnp.stack([analytic.recover_image(model, jax.tree.map(lambda a: a[i], updates), shape)
                      for i in range(4)])
    np.testing.assert_allclose(rec, loop, atol=1e-6)


def test_classifier_input_is_the_hidden_features_at_batch_one(mlp_case):
    model, params, x, _, _, _, updates = mlp_case
    update = jax.tree.map(lambda a: a[0], updates)
    features = jax.nn.relu(x[:1].reshape(1, -1) @ params["hidden"]["w"] + params["hidden"]["b"])
    np.testing.assert_allclose(analytic.recover_features(model, update), features[0],
                               atol=1e-5, rtol=1e-4)


def test_batch_above_one_gives_mixtures_whose_weights_sum_to_one(mlp_case):
    _, _, x, _, _, update, _ = mlp_case
    inputs, active = analytic.unit_inputs(update["hidden"])
    flat = x.reshape(4, -1)
    units = inputs[np.asarray(active)]
    assert units.shape[0] > 100  # measured 232 of 256 units active for some image
    lam, resid = jax.jit(jax.vmap(analytic.mixture_weights, in_axes=(0, None)))(units, flat)
    # Measured: residual < 2e-6 and |sum - 1| < 2e-4 for every active unit.
    assert float(resid.max()) < 1e-3, resid.max()
    np.testing.assert_allclose(lam.sum(1), 1.0, atol=1e-2)
    # ... and not one image: the batch-1 formula on a batch of 4 mixes them.
    mixed = analytic.recover_single(update["hidden"])
    err = jnp.min(jnp.mean((mixed[None] - flat) ** 2, axis=1))
    assert float(err) > 0.1, err  # measured 0.52 (normalised MNIST)


def test_unique_labels_per_label_rows_approximate_each_example(mlp_case):
    _, params, xs, ys, _, update, _ = mlp_case
    rec = analytic.recover_per_label(update["dense"], ys)
    feats = jax.nn.relu(xs.reshape(4, -1) @ params["hidden"]["w"] + params["hidden"]["b"])
    cos = jnp.sum(rec * feats, 1) / (jnp.linalg.norm(rec, axis=1) * jnp.linalg.norm(feats, axis=1))
    # Measured cosines 0.90-0.98 on this untrained MLP; the others' features mix in.
    assert float(cos.min()) > 0.8, cos


def test_a_layer_without_bias_is_refused():
    with pytest.raises(ValueError, match="with a bias"):
        analytic.unit_inputs({"w": jnp.ones((3, 2))})
    with pytest.raises(ValueError, match="first layer is dense"):
        model = models.get("cnn")
        analytic.recover_image(model, {"conv0": {"w": jnp.ones((5, 5, 1, 16))}}, (28, 28, 1))


def test_pure_unit_rule_picks_exact_images_without_the_ground_truth(mlp_case, mnist_sample):
    _, params, x, _, _, update, _ = mlp_case
    info = mnist_sample.info
    lo, hi = (0.0 - info.mean[0]) / info.std[0], (1.0 - info.mean[0]) / info.std[0]
    inputs, picked = jax.jit(lambda u: analytic.pick_pure_units(u, lower=lo, upper=hi))(
        update["hidden"])
    cand = np.asarray(inputs)[np.asarray(picked)]
    d = np.mean((cand[:, None] - np.asarray(x.reshape(4, -1))[None]) ** 2, axis=2)
    # Every pick is one of the 4 images to float rounding (measured max MSE ~1e-13),
    # one pick per image, and all 4 images are found (measured: 4 picks).
    assert d.min(axis=1).max() < 1e-8, d.min(axis=1)
    assert len(cand) == 4 and sorted(d.argmin(axis=1).tolist()) == [0, 1, 2, 3]
    # Without the twin rule most active units are mixtures: measured 232 active units.
    assert int(jnp.sum(jnp.abs(update["hidden"]["b"]) > analytic.EPS)) > 100
