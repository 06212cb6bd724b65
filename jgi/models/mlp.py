"""A one-hidden-layer MLP (SPEC.md: "MLP, one hidden layer of 256").

Flatten -> Linear(in, 256) -> ReLU -> [dropout] -> [PRECODE] -> Linear(256, classes).
It has no convolutional feature map, so it has no place for a CVB; PRECODE sits just
before the last layer as in Scheliga et al. (WACV 2022).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jgi.models import bottleneck as vb
from jgi.models import dropout as do
from jgi.models import layers
from jgi.models.interface import Model

PRECODE_K, PRECODE_BETA = 256, 1e-3


def mlp(num_classes: int = 10, width: int = 256, dropout: float = 0.0,
        bottleneck: str | None = None) -> Model:
    """Builds the MLP.

    Args:
      num_classes: outputs.
      width: hidden units (256).
      dropout: dropout rate after the hidden layer (0 = none).
      bottleneck: None or "precode" ("cvb" is refused: no feature map to place it on).
    """
    if bottleneck == "cvb":
        raise ValueError("mlp has no convolutional feature map, so a CVB has no place in it; "
                         "bottlenecks the mlp supports: precode.")
    if bottleneck not in (None, "precode"):
        raise ValueError(f"mlp: unknown bottleneck {bottleneck!r}; the mlp supports: precode.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout rate must be in [0, 1), got {dropout}.")

    def init(key, input_shape):
        k1, k2, k3 = jax.random.split(key, 3)
        params = {"hidden": layers.dense_init(k1, math.prod(input_shape), width),
                  "dense": layers.dense_init(k2, width, num_classes)}
        if bottleneck == "precode":
            params["bottleneck"] = vb.precode_init(k3, width, PRECODE_K)
        return params

    def sample_noise(key, input_shape, batch_size):
        del input_shape
        k1, k2 = jax.random.split(key)
        noise = {}
        if dropout > 0:
            noise["dropout"] = {"hidden": do.sample_mask(k1, (batch_size, width), dropout)}
        if bottleneck == "precode":
            noise["eps"] = jax.random.normal(k2, vb.precode_eps_shape(batch_size, PRECODE_K))
        return noise

    def forward(params, x, noise):
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(layers.dense(params["hidden"], x, name="mlp.hidden"))
        if dropout > 0:
            x = do.apply_mask(x, noise["dropout"]["hidden"], dropout, name="mlp.dropout")
        penalty = jnp.zeros((), jnp.float32)
        if bottleneck == "precode":
            x, penalty = vb.precode_apply(params["bottleneck"], x, noise["eps"], PRECODE_BETA)
        return layers.dense(params["dense"], x, name="mlp.dense"), penalty

    order = ("hidden", "bottleneck", "dense") if bottleneck else ("hidden", "dense")
    return Model(name="mlp", init=init, forward=forward, sample_noise=sample_noise,
                 classifier="dense", layer_order=order, dropout=dropout, bottleneck=bottleneck,
                 options=(("num_classes", num_classes), ("width", width), ("dropout", dropout),
                          ("bottleneck", bottleneck)))
