"""R-GAP's CNN6 and CNN6-d: the paper's layer shapes, bias-free, one logit."""

import jax
import jax.numpy as jnp
import pytest

from jgi import models
from jgi.models import cnn6


def test_cifar_shapes_and_no_biases():
    shapes = cnn6.feature_shapes((32, 32, 3), cnn6.CNN6_CONVS)
    assert [s[:2] for s in shapes] == [(32, 32), (17, 17), (9, 9), (9, 9), (9, 9), (5, 5),
                                       (5, 5)]
    assert shapes[-1] == (5, 5, 128)  # 3,200 features into the linear layer
    model = models.get("cnn6d")
    params = jax.eval_shape(lambda k: model.init(k, (32, 32, 3)), jax.random.key(0))
    assert params["conv1"]["w"].shape == (3, 3, 12, 20)
    assert params["conv2"]["w"].shape == (3, 3, 20, 36)
    assert params["fc"]["w"].shape == (3200, 1)
    assert all(set(layer) == {"w"} for layer in params.values())


def test_forward_is_leaky_relu_convs_to_one_logit():
    model = models.get("cnn6")
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (4, 4, 3))
    x = jax.random.uniform(jax.random.key(1), (2, 4, 4, 3))
    apply = jax.jit(lambda p, x: model.apply(p, x, {}))
    logits = apply(params, x)
    assert logits.shape == (2, 1)
    # positive homogeneity: no bias, LeakyReLU, so f(2x) = 2 f(x)
    assert jnp.allclose(apply(params, 2 * x), 2 * logits, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="slope"):
        models.get("cnn6", slope=0.0)
