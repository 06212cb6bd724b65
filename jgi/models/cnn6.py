"""CNN6 and CNN6-d, the bias-free LeakyReLU networks of R-GAP.

Zhu and Blaschko, "R-GAP: Recursive Gradient Attack on Privacy", ICLR 2021 (section 5,
Table 2), and the layers of the authors' public repository (JunyiZhu-AI/R-GAP,
``models/CNN6.py``, ``models/CNN6d.py``): six convolutions without bias, each followed
by LeakyReLU(0.2), then one linear layer without bias to a single logit (the paper
trains it with the logistic loss, :mod:`jgi.attacks.rgap`):

| layer | CNN6 | CNN6-d | kernel | stride | padding |
|---|---|---|---|---|---|
| conv0 | 3 -> 12 | 3 -> 12 | 4 | 2 | 2 |
| conv1 | 12 -> 36 | 12 -> 20 | 3 | 2 | 1 |
| conv2 | 36 -> 36 | 20 -> 36 | 3 | 1 | 1 |
| conv3 | 36 -> 36 | 36 -> 36 | 3 | 1 | 1 |
| conv4 | 36 -> 64 | 36 -> 64 | 3 | 2 | 1 |
| conv5 | 64 -> 128 | 64 -> 128 | 3 | 1 | 1 |
| fc | 3200 -> 1 | 3200 -> 1 | | | |

(32 -> 17 -> 9 -> 9 -> 9 -> 5 -> 5 pixels on CIFAR-10.) CNN6-d narrows conv1 to 20
channels, which leaves too few equations to determine conv1's input: R-GAP's rank
analysis flags it and the attack fails there (:func:`jgi.attacks.rgap.rank_analysis`).

Choices: the input channels follow the data (1 on MNIST); the linear layer's width is
the flattened feature map of the given input shape (3,200 at 32x32); ``num_classes``
defaults to the paper's one logit (more outputs are allowed for use elsewhere, but the
attack needs one). Initialisation: PyTorch's default, as everywhere in jgi
(:mod:`jgi.models.layers`); the authors' attack runs on the untrained network.
Parameters: ``{"conv0": {"w"}, ..., "conv5": {"w"}, "fc": {"w"}}``, no biases.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jgi.models import layers
from jgi.models.interface import Model, no_noise

SLOPE = 0.2


class ConvSpec(NamedTuple):
    """One bias-free convolution: channels, kernel, stride and symmetric padding."""

    out_channels: int
    kernel: int
    stride: int
    padding: int


CNN6_CONVS = (ConvSpec(12, 4, 2, 2), ConvSpec(36, 3, 2, 1), ConvSpec(36, 3, 1, 1),
              ConvSpec(36, 3, 1, 1), ConvSpec(64, 3, 2, 1), ConvSpec(128, 3, 1, 1))
CNN6D_CONVS = CNN6_CONVS[:1] + (ConvSpec(20, 3, 2, 1),) + CNN6_CONVS[2:]


def conv_apply(w: jax.Array, x: jax.Array, spec: ConvSpec) -> jax.Array:
    """The bias-free convolution of NHWC ``x`` with ``w`` (k, k, in, out)."""
    p = spec.padding
    return lax.conv_general_dilated(x, w, (spec.stride, spec.stride), ((p, p), (p, p)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def feature_shapes(input_shape: tuple[int, int, int],
                   convs: tuple[ConvSpec, ...]) -> list[tuple[int, int, int]]:
    """The (H, W, C) input of every conv and, last, of the linear layer."""
    h, w, c = input_shape
    shapes = [(h, w, c)]
    for s in convs:
        h = (h + 2 * s.padding - s.kernel) // s.stride + 1
        w = (w + 2 * s.padding - s.kernel) // s.stride + 1
        if h < 1 or w < 1:
            raise ValueError(f"cnn6: an input of {input_shape} leaves no pixel after a "
                             f"{s.kernel}x{s.kernel} stride-{s.stride} convolution.")
        c = s.out_channels
        shapes.append((h, w, c))
    return shapes


def leaky_relu(x: jax.Array, slope: float = SLOPE) -> jax.Array:
    return jnp.where(x > 0, x, slope * x)


def _build(name: str, convs: tuple[ConvSpec, ...], num_classes: int, slope: float) -> Model:
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes must be >= 1 (R-GAP uses 1), got {num_classes}.")
    if not 0 < slope < 1:
        raise ValueError(f"{name}: the LeakyReLU slope must be in (0, 1) to be invertible, "
                         f"got {slope}.")
    names = tuple(f"conv{i}" for i in range(len(convs)))

    def init(key, input_shape):
        shapes = feature_shapes(tuple(input_shape), convs)
        keys = jax.random.split(key, len(convs) + 1)
        params = {n: layers.conv_init(k, s.kernel, shp[2], s.out_channels, bias=False)
                  for n, k, s, shp in zip(names, keys[:-1], convs, shapes[:-1],
                                             strict=True)}
        params["fc"] = layers.dense_init(keys[-1], math.prod(shapes[-1]), num_classes,
                                         bias=False)
        return params

    def forward(params, x, noise):
        del noise
        for n, s in zip(names, convs, strict=True):
            x = leaky_relu(conv_apply(params[n]["w"], x, s), slope)
        x = x.reshape(x.shape[0], -1)
        return layers.dense(params["fc"], x, name=f"{name}.fc"), jnp.zeros((), jnp.float32)

    return Model(name=name, init=init, forward=forward, sample_noise=no_noise,
                 classifier="fc", layer_order=(*names, "fc"),
                 options=(("num_classes", num_classes), ("slope", slope)))


def cnn6(num_classes: int = 1, slope: float = SLOPE) -> Model:
    """R-GAP's CNN6 (full rank at 32x32).

    Args:
      num_classes: logits (the paper: 1, logistic loss).
      slope: LeakyReLU negative slope (0.2).
    """
    return _build("cnn6", CNN6_CONVS, num_classes, slope)


def cnn6d(num_classes: int = 1, slope: float = SLOPE) -> Model:
    """R-GAP's rank-deficient CNN6-d (conv1 narrowed to 20 channels)."""
    return _build("cnn6d", CNN6D_CONVS, num_classes, slope)


CONVS = {"cnn6": CNN6_CONVS, "cnn6d": CNN6D_CONVS}
