import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import models
from jgi.models import study


def _count(params):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def _abstract_params(name, shape, **options):
    model = models.get(name, **options)
    return jax.eval_shape(lambda k: model.init(k, shape), jax.random.key(0))


@pytest.mark.parametrize("name,shape,expected", [
    # The counts in jgi/models/study.py's docstring, computed by hand there.
    ("study_cnn", (32, 32, 3), 8_413_642), ("study_cnn", (28, 28, 1), 6_446_986),
    ("convnet3", (32, 32, 3), 1_716_258), ("convnet3", (28, 28, 1), 1_331_106),
    ("mlp", (32, 32, 3), 789_258),  # the study's 256-unit MLP is the default mlp
])
def test_parameter_counts_match_the_docstrings(name, shape, expected):
    assert _count(_abstract_params(name, shape)) == expected


def test_study_cnn_layout_16384_features_before_the_512_unit_layer():
    p = _abstract_params("study_cnn", (32, 32, 3))
    assert p["conv0"]["w"].shape == (3, 3, 3, 32) and p["conv1"]["w"].shape == (3, 3, 32, 64)
    assert p["hidden"]["w"].shape == (16384, 512) and p["dense"]["w"].shape == (512, 10)
    c3 = _abstract_params("convnet3", (32, 32, 3), num_classes=100)
    assert c3["hidden"]["w"].shape == (8 * 8 * 128, 200) and c3["dense"]["w"].shape == (200, 100)


def _by_hand(params, x):
    h = jax.nn.relu(jax.lax.conv_general_dilated(x, params["conv0"]["w"], (1, 1), "SAME",
                    dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["conv0"]["b"])
    h = jax.nn.relu(jax.lax.conv_general_dilated(h, params["conv1"]["w"], (1, 1), "SAME",
                    dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["conv1"]["b"])
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.nn.relu(h.reshape(2, -1) @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["dense"]["w"] + params["dense"]["b"]


def test_study_cnn_is_the_layers_composed_by_hand():
    model, plain = models.get("study_cnn"), models.get("study_cnn", conv_impl="lax")
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
    params = model.init(jax.random.key(0), x.shape[1:])
    # One jitted program: compiles faster than the ops dispatched one by one.
    got, got_plain, expected = jax.jit(lambda p, x: (model.apply(p, x, {}),
                                                     plain.apply(p, x, {}), _by_hand(p, x)))(
        params, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_plain, expected, rtol=1e-5, atol=1e-5)


def test_pools_drop_an_odd_last_row_and_average_or_take_the_max():
    x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
    assert study.pool2x2(x, "max").shape == (2, 2, 2, 1)
    assert float(study.pool2x2(x, "max")[0, 0, 0, 0]) == 6.0  # max of 0, 1, 5, 6
    assert float(study.pool2x2(x, "avg")[0, 0, 0, 0]) == 3.0
    model = models.get("convnet3")
    params = _abstract_params("convnet3", (7, 9, 1))  # 7x9 -> 3x4 -> 1x2
    assert params["hidden"]["w"].shape == (1 * 2 * 128, 200)
    logits = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((3, 7, 9, 1),
                                                                      jnp.float32), {})
    assert logits.shape == (3, 10)


def test_flax_init_has_zero_biases_and_lecun_normal_kernels():
    # The default (PyTorch) init is jgi.models.layers', checked in tests/models/test_cnn.py.
    f = jax.jit(models.get("convnet3", init="flax").init, static_argnums=1)(
        jax.random.key(0), (8, 8, 3))
    assert float(jnp.abs(f["conv0"]["b"]).max()) == 0.0
    # LeCun normal: std sqrt(1 / fan_in) = 0.19 for 27 inputs; the truncation lowers it a bit.
    assert 0.12 < float(jnp.std(f["conv1"]["w"])) * np.sqrt(3 * 3 * 64) < 1.05


def test_errors_say_what_would_be_right():
    with pytest.raises(ValueError, match="pytorch, flax"):
        models.get("study_cnn", init="xavier")
    model = models.get("study_cnn")
    params = model.init(jax.random.key(0), (8, 8, 1))
    with pytest.raises(ValueError, match=r"expect 1024 features.*\(10, 10, 1\) give 1600"):
        model.apply(params, jnp.zeros((1, 10, 10, 1)), {})
    with pytest.raises(ValueError, match="too small"):
        models.get("convnet3").init(jax.random.key(0), (3, 3, 1))
    with pytest.raises(ValueError, match="noise has keys"):
        model.apply(params, jnp.zeros((1, 8, 8, 1)), {"eps": jnp.zeros(1)})
