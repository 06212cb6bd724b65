"""The imprint module of "Robbing the Fed" in front of any registered model.

Fowl, Geiping, Czaja, Goldblum, Goldstein, "Robbing the Fed: Directly Obtaining Private
Data in Federated Learning with Modified Models", ICLR 2022 (section 3); NotEasy
(Zhu, Huang, Xie 2024, Eq. 29-31) for the setting with 100 bins. A malicious server
puts

    flatten -> Linear(d -> k bins) -> ReLU -> Linear(k -> d) -> reshape -> backbone

in front of the model the federation trains. Every bin's weight row measures the same
"brightness" ``<w, x>`` with ``w = 1/d`` (the mean of the normalised input) and bin
``i`` is active when the brightness exceeds its threshold ``t_i``, the ``i/k``
quantile of the brightness distribution the server expects (Gaussian or Laplace with
the given mean and std: the server estimates them from public data of the domain,
:func:`brightness_statistics`). The output layer's weights are all equal, so every
bin passes the same gradient back for one example: the difference of two consecutive
bins' gradients holds only the examples whose brightness falls between them
(:mod:`jgi.attacks.rtf`).

Gain. The first layer is scaled by ``gain`` and the output layer by ``1 / gain``
(the block computes the same function for every gain; the ReLU is positively
homogeneous). A small gain keeps the output layer's columns equal through many local
steps (its gradient scales with the small activations), which multi-step FedAvg
recovery needs, but makes the first layer's gradient ``1 / gain`` times larger than
its weights: NotEasy's code uses ``1 / gain = 1000`` and reports that training with a
CNN backbone then explodes (their Fig. 46) and ResNet-18 + imprint does not converge.

Choices where the papers are silent:

- The output layer has weights ``1 / gain`` everywhere and zero bias (breaching's
  ``ImprintBlock`` uses ones): the backbone then sees every pixel equal to the same
  sum over active bins, which is part of why the modified model learns poorly.
- Thresholds ``t_i = Q(i / k)`` for ``i = 1 .. k - 1`` and, for bin 0, the floor
  ``mean - 10 std`` (breaching: -10), so bin 0 is active for every image and the ``k``
  bins split the brightness line at the ``k - 1`` inner quantiles.

Parameters: ``{"imprint": {"w": (d, k), "b": (k,)}, "imprint_out": {"w": (k, d),
"b": (d,)}, **backbone params}``; the backbone's layers keep their names, so its
``classifier`` and ``layer_order`` stay valid.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgi.models.interface import Model

DISTRIBUTIONS = ("gaussian", "laplace")
IMPRINT_KEYS = ("imprint", "imprint_out")
FLOOR_STDS = 10.0  # bin 0's threshold, mean - 10 std: active for every image


def brightness_thresholds(num_bins: int, distribution: str = "gaussian", mean: float = 0.0,
                          std: float = 1.0) -> np.ndarray:
    """The ``num_bins`` increasing thresholds ``t_0 < ... < t_{k-1}`` of the bins.

    ``t_i`` is the ``i / k`` quantile of the brightness distribution for ``i >= 1``
    (Gaussian, or Laplace with scale ``std / sqrt(2)``), ``t_0 = mean - 10 std``.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"Unknown brightness distribution {distribution!r}; valid: "
                         f"{', '.join(DISTRIBUTIONS)}.")
    p = np.arange(1, num_bins) / num_bins
    if distribution == "gaussian":
        inner = np.array([NormalDist(mean, std).inv_cdf(float(pi)) for pi in p])
    else:
        b = std / math.sqrt(2.0)
        inner = mean - b * np.sign(p - 0.5) * np.log1p(-2.0 * np.abs(p - 0.5))
    return np.concatenate([[mean - FLOOR_STDS * std], inner]).astype(np.float32)


def brightness(x: jax.Array) -> jax.Array:
    """The imprint's brightness ``<1/d, x>`` of each example of (B, H, W, C): (B,)."""
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def brightness_statistics(x: Any) -> tuple[float, float]:
    """Mean and std of the brightness of (normalised) public images (N, H, W, C)."""
    b = np.asarray(brightness(jnp.asarray(x)))
    return float(b.mean()), float(b.std())


def imprint_params(input_shape: tuple[int, ...], num_bins: int, gain: float,
                   thresholds: np.ndarray) -> dict:
    """The malicious block's parameters (no randomness: the server sets every value)."""
    d = math.prod(input_shape)
    return {
        "imprint": {"w": jnp.full((d, num_bins), gain / d, jnp.float32),
                    "b": jnp.asarray(-gain * thresholds, jnp.float32)},
        "imprint_out": {"w": jnp.full((num_bins, d), 1.0 / gain, jnp.float32),
                        "b": jnp.zeros((d,), jnp.float32)},
    }


def imprint_apply(params: dict, x: jax.Array) -> jax.Array:
    """The block on (B, H, W, C): its output has the input's shape."""
    flat = x.reshape(x.shape[0], -1)
    h = jax.nn.relu(flat @ params["imprint"]["w"] + params["imprint"]["b"])
    return (h @ params["imprint_out"]["w"] + params["imprint_out"]["b"]).reshape(x.shape)


def imprint_model(backbone: Model, num_bins: int = 100, gain: float = 1e-3,
                  distribution: str = "gaussian", brightness_mean: float = 0.0,
                  brightness_std: float = 1.0) -> Model:
    """Puts the imprint block in front of ``backbone``.

    Args:
      backbone: any model (:func:`jgi.models.get`).
      num_bins: k, the bins (NotEasy: 100; breaching: 64).
      gain: first layer x gain, output layer x 1/gain (NotEasy's code: 1e-3).
      distribution: "gaussian" or "laplace", the brightness law of the quantiles.
      brightness_mean, brightness_std: the server's estimate of the brightness law
        (breaching: 0 and 1; :func:`brightness_statistics` of public data).

    Returns:
      A :class:`~jgi.models.interface.Model` named ``"imprint+<backbone>"``.
    """
    if num_bins < 2:
        raise ValueError(f"imprint: num_bins must be >= 2 (differences of consecutive "
                         f"bins), got {num_bins}.")
    if not gain > 0:
        raise ValueError(f"imprint: gain must be > 0 (it scales the first layer, 1/gain "
                         f"the second), got {gain}.")
    if not brightness_std > 0:
        raise ValueError(f"imprint: brightness_std must be > 0, got {brightness_std}.")
    thresholds = brightness_thresholds(num_bins, distribution, brightness_mean, brightness_std)

    def init(key, input_shape):
        params = backbone.init(key, input_shape)
        clash = sorted(set(params) & set(IMPRINT_KEYS))
        if clash:
            raise ValueError(f"imprint: the backbone {backbone.name} already has layers "
                             f"named {clash}.")
        return {**imprint_params(tuple(input_shape), num_bins, gain, thresholds), **params}

    def forward(params, x, noise):
        inner = {k: v for k, v in params.items() if k not in IMPRINT_KEYS}
        return backbone.forward(inner, imprint_apply(params, x), noise)

    return Model(
        name=f"imprint+{backbone.name}", init=init, forward=forward,
        sample_noise=backbone.sample_noise, classifier=backbone.classifier,
        layer_order=(*IMPRINT_KEYS, *backbone.layer_order), dropout=backbone.dropout,
        bottleneck=backbone.bottleneck,
        options=(("backbone", backbone.describe()["name"]),
                 ("backbone_options", backbone.options), ("num_bins", num_bins),
                 ("gain", gain), ("distribution", distribution),
                 ("brightness_mean", brightness_mean), ("brightness_std", brightness_std)))


def imprinted(backbone: str = "mlp", num_bins: int = 100, gain: float = 1e-3,
            distribution: str = "gaussian", brightness_mean: float = 0.0,
            brightness_std: float = 1.0, num_classes: int = 10) -> Model:
    """Registry factory: the imprint block in front of the registered model ``backbone``.

    Args:
      backbone: a name in :data:`jgi.models.MODELS` (built with ``num_classes``).
      num_bins, gain, distribution, brightness_mean, brightness_std: see
        :func:`imprint_model`.
      num_classes: the backbone's outputs.
    """
    from jgi.models import get  # the registry imports this module

    if backbone == "imprint":
        raise ValueError("imprint: the backbone cannot be another imprint model.")
    return imprint_model(get(backbone, num_classes=num_classes), num_bins, gain, distribution,
                         brightness_mean, brightness_std)
