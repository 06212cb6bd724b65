import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import fl, models
from jgi.attacks import distances
from jgi.attacks.labels import idlg_labels


def test_idlg_recovers_every_label_for_batch_size_one(mnist_sample):
    model = models.get("cnn")
    params = model.init(jax.random.key(0), (28, 28, 1))
    x, y = jnp.asarray(mnist_sample.x_train[:64]), jnp.asarray(mnist_sample.y_train[:64])
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, {}))(params)
    np.testing.assert_array_equal(idlg_labels(updates, model.classifier), y)
    # Without the bias the column sums of the weight gradient carry the same sign.
    no_bias = {**updates, "dense": {"w": updates["dense"]["w"]}}
    np.testing.assert_array_equal(idlg_labels(no_bias, "dense"), y)


def test_idlg_names_a_missing_classifier():
    with pytest.raises(ValueError, match="model.classifier"):
        idlg_labels({"conv0": {}}, "dense")


def test_cosine_distance_properties():
    a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    assert float(distances.cosine_distance(a, a)) == pytest.approx(0.0, abs=1e-6)
    neg = jax.tree.map(lambda v: -v, a)
    assert float(distances.cosine_distance(a, neg)) == pytest.approx(2.0, abs=1e-6)
    scaled = jax.tree.map(lambda v: 7.0 * v, a)
    assert float(distances.cosine_distance(a, scaled)) == pytest.approx(0.0, abs=1e-6)
    ortho = {"w": jnp.array([2.0, -1.0]), "b": jnp.array([0.0])}
    assert float(distances.cosine_distance(a, ortho)) == pytest.approx(1.0, abs=1e-6)
    # One cosine over the concatenation, not a mean of per-layer cosines.
    b = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([-3.0])}
    expected = 1 - (1 + 4 - 9) / 14
    assert float(distances.cosine_distance(a, b)) == pytest.approx(expected, abs=1e-6)
    # A leaf mask leaves layers out.
    assert float(distances.cosine_distance(a, b, leaf_mask=[False, True])) == pytest.approx(
        0.0, abs=1e-6)


def test_l2_distance_and_mismatched_trees():
    a = {"w": jnp.array([1.0, 2.0])}
    b = {"w": jnp.array([0.0, 4.0])}
    assert float(distances.l2_distance(a, b)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="leaves"):
        distances.cosine_distance(a, {"w": a["w"], "b": a["w"]})
