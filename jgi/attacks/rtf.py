"""Robbing the Fed (RTF): images from the imprint block's update, bin by bin.

Fowl, Geiping, Czaja, Goldblum, Goldstein, "Robbing the Fed: Directly Obtaining Private
Data in Federated Learning with Modified Models", ICLR 2022; NotEasy Eq. 31. With the
block of :mod:`jgi.models.imprint` in front of the model, bin ``i`` is active for the
examples whose brightness exceeds ``t_i``, and every active bin receives the same
gradient ``c_n`` from example ``n`` (the output layer's columns are equal). So

    dW_i - dW_{i+1} = sum_{n: t_i <= b_n < t_{i+1}} c_n x_n,
    db_i - db_{i+1} = sum_{n: t_i <= b_n < t_{i+1}} c_n,

and their ratio is ``x_n`` exactly when example ``n`` is alone in bin ``i`` (the last
bin is ``dW_{k-1} / db_{k-1}``). Two examples in one bin give a weighted mixture; an
empty bin has ``db_i - db_{i+1} = 0`` and gives nothing. Nothing depends on the labels,
the batch size, the loss or the rest of the model, and because the identities are
linear in the update they survive summing: a FedAvg weight change ``W_t - W_k`` over
several local steps (while the output layer's columns stay equal and the bins do not
move much: a small gain, see :mod:`jgi.models.imprint`) and the aggregate of many
clients' updates (secure aggregation hides nothing from this attack).

Threat model (:data:`THREAT_MODEL`): a malicious server that changes the model (it
inserts the imprint block and sets its parameters) and sees an update of the block's
first layer: one client's, or only a sum over clients.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgi.attacks.analytic import ThreatModel
from jgi.models import imprint as imprint_lib

THREAT_MODEL = ThreatModel(
    knows="the imprint block it inserted (thresholds, gain); the brightness law of the "
          "domain, estimated from public data",
    changes="the model: inserts Linear(d -> k bins) + ReLU + Linear(k -> d) in front of "
            "the backbone and sets their parameters",
    sees="the first imprint layer's update: a gradient, a multi-step weight change "
         "W_t - W_k, or a sum of such updates over clients")

EPS = 1e-10  # |db_i - db_{i+1}| at or below this counts as an empty bin


class Recovery(NamedTuple):
    """What RTF returns for one update.

    Attributes:
      images: (k, H, W, C) one candidate per bin, in the model's input space (zeros for
        empty bins).
      filled: (k,) bool, the bins whose bias difference is nonzero.
    """

    images: jax.Array
    filled: jax.Array


@functools.partial(jax.jit, static_argnames=("input_shape", "eps"))
def recover(update: Any, input_shape: tuple[int, ...], eps: float = EPS) -> Recovery:
    """RTF on one update (one client's, or a sum over clients).

    Args:
      update: the update with the structure of the imprint model's params (only
        ``update["imprint"]`` is read), or that layer's ``{"w", "b"}`` itself.
      input_shape: (H, W, C) of one example.
      eps: bias differences at or below this are empty bins.

    Returns:
      A :class:`Recovery`.
    """
    layer = update["imprint"] if "imprint" in update else update
    input_shape = tuple(input_shape)
    w, b = layer["w"], layer["b"]
    if w.ndim != 2 or b.shape != (w.shape[1],):
        raise ValueError(f"RTF expects the imprint layer's update w (d, k), b (k,); got "
                         f"{tuple(w.shape)} and {tuple(b.shape)}.")
    dw = w - jnp.concatenate([w[:, 1:], jnp.zeros_like(w[:, :1])], axis=1)
    db = b - jnp.concatenate([b[1:], jnp.zeros_like(b[:1])])
    filled = jnp.abs(db) > eps
    images = jnp.where(filled[:, None], dw.T / jnp.where(filled, db, 1.0)[:, None], 0.0)
    return Recovery(images.reshape(w.shape[1], *input_shape), filled)


def recover_victims(updates: Any, input_shape: tuple[int, ...]) -> Recovery:
    """:func:`recover` vmapped over a leading axis of updates."""
    return jax.vmap(lambda u: recover(u, input_shape))(updates)


@jax.jit
def bins_of(thresholds: np.ndarray | jax.Array, x: jax.Array) -> jax.Array:
    """The bin of each example of (B, H, W, C): the last threshold its brightness
    reaches (the server's thresholds, ``imprint.brightness_thresholds``)."""
    return jnp.sum(imprint_lib.brightness(x)[:, None] >= jnp.asarray(thresholds)[None],
                   axis=1) - 1


@jax.jit
def match(originals: jax.Array, recovery: Recovery) -> tuple[jax.Array, jax.Array]:
    """For each original, the filled bin whose image is closest (MSE), a metric's pairing.

    Returns:
      ``(index, mse)``: (N,) the bin matched to each original and its MSE (inf when
      no bin is filled). Two originals that share a bin both match its mixture.
    """
    flat_o = originals.reshape(originals.shape[0], -1)
    flat_r = recovery.images.reshape(recovery.images.shape[0], -1)
    d = jnp.mean((flat_o[:, None, :] - flat_r[None]) ** 2, axis=-1)
    d = jnp.where(recovery.filled[None], d, jnp.inf)
    idx = jnp.argmin(d, axis=1)
    return idx, jnp.take_along_axis(d, idx[:, None], axis=1)[:, 0]
