"""The imprint block of Robbing the Fed in front of a registered model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import models
from jgi.models import imprint


def test_thresholds_are_the_quantiles_of_the_brightness_law():
    t = imprint.brightness_thresholds(4, "gaussian", 0.5, 2.0)
    np.testing.assert_allclose(t[1:], 0.5 + 2.0 * np.array([-0.6744898, 0.0, 0.6744898]),
                               rtol=1e-5)
    assert t[0] == pytest.approx(0.5 - 20.0)  # the floor: bin 0 is active for every image
    lap = imprint.brightness_thresholds(4, "laplace", 0.0, np.sqrt(2.0))
    # Laplace(0, b = 1): quartiles at -ln 2, 0, ln 2
    np.testing.assert_allclose(lap[1:], [-np.log(2), 0.0, np.log(2)], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="gaussian, laplace"):
        imprint.brightness_thresholds(4, "uniform")


def test_block_output_is_the_sum_over_active_bins_for_every_gain():
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    t = imprint.brightness_thresholds(8, "gaussian", 0.0, 0.3)
    b = np.asarray(imprint.brightness(x))
    expected = np.maximum(b[:, None] - t[None], 0).sum(1)
    for gain in (1e-3, 1.0):
        out = imprint.imprint_apply(imprint.imprint_params((4, 4, 2), 8, gain, t), x)
        assert out.shape == x.shape
        # every pixel of an example's output is the same sum (float32: 1e-3 relative)
        np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None, None], x.shape),
                                   rtol=1e-3)


def test_registered_factory_keeps_the_backbone_layers_and_classifier():
    model = models.get("imprint", backbone="mlp", num_bins=16, gain=1.0)
    params = model.init(jax.random.key(0), (4, 4, 1))
    assert model.name == "imprint+mlp" and model.classifier == "dense"
    assert model.layer_order == ("imprint", "imprint_out", "hidden", "dense")
    assert params["imprint"]["w"].shape == (16, 16) and params["imprint_out"]["w"].shape == (16, 16)
    logits = model.apply(params, jnp.ones((2, 4, 4, 1)), {})
    assert logits.shape == (2, 10)
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        models.get("imprint", num_bins=1)
    with pytest.raises(ValueError, match="gain must be > 0"):
        models.get("imprint", gain=0.0)
