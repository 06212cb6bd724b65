"""Analytic recovery of a dense layer's input from its weight and bias gradients.

Phong, Aono, Hayashi, Wang, Moriai, "Privacy-Preserving Deep Learning via Additively
Homomorphic Encryption" (IEEE TIFS 2017, section 3): for a dense layer ``h = x W + b``
and one example, ``dL/dW[:, j] = x * dL/dh_j`` and ``dL/db_j = dL/dh_j``, so every unit
``j`` with ``dL/db_j != 0`` gives the layer's input exactly as
``x = dL/dW[:, j] / dL/db_j``. The same holds for a weight change ``W_t - W_k`` after one
SGD step (both sides scale by the learning rate).

Threat model (:data:`THREAT_MODEL`): an honest-but-curious server that sees one client's
shared gradient (or one-step weight change) of a model with a dense layer *with bias*;
it changes nothing.

What it gives:

- batch 1: the input of *any* dense layer with bias, to float rounding. On
  :func:`jgi.models.mlp` the first layer (``"hidden"``) takes the flattened image, so the
  image itself comes back (:func:`recover_image`); on a CNN whose classifier has a bias
  the classifier's input (the penultimate features) comes back, the first step of a
  feature-inversion attack (:func:`recover_features`).
- batch B > 1: unit ``j``'s ratio is ``sum_n c_nj x_n / sum_n c_nj`` with
  ``c_nj = dL/dh_nj`` of example ``n``: a mixture of the batch's inputs whose
  coefficients sum to 1 (:func:`unit_inputs`). For the *first* layer of the MLP that is
  a mixture of images (a unit active for only one image of the batch, through the ReLU
  of the next layer's backward pass, gives that image). For the *classifier* with
  softmax cross-entropy and unique labels, the row of label ``y_n`` is dominated by
  example ``n`` (its coefficient ``p_ny - 1`` against ``p_my`` for the others), so the
  per-label rows give each example's penultimate features approximately
  (:func:`recover_per_label`), as in Phong et al.'s per-label analysis.

All functions act on one update; vmap them over victims (``jax.vmap``), as
:func:`recover_victims` does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jgi.models.interface import Model


@dataclasses.dataclass(frozen=True)
class ThreatModel:
    """What a server needs and does for an attack (stated in code, per attack).

    Attributes:
      knows: what the server knows.
      changes: what it may change in the model or the protocol.
      sees: what it observes of the client.
    """

    knows: str
    changes: str
    sees: str


THREAT_MODEL = ThreatModel(
    knows="the architecture (which layer is dense with a bias); nothing of the data",
    changes="nothing (honest-but-curious)",
    sees="one client's gradient, or its weight change after one SGD step")

EPS = 1e-12  # |dL/db_j| below this counts as an inactive unit


def _check(layer_update: dict) -> tuple[jax.Array, jax.Array]:
    if "b" not in layer_update:
        raise ValueError("Analytic recovery needs a dense layer with a bias: dL/db is the "
                         "divisor of dL/dW. This layer update has only "
                         f"{sorted(layer_update)}.")
    w, b = layer_update["w"], layer_update["b"]
    if w.ndim != 2 or b.shape != (w.shape[1],):
        raise ValueError(f"Expected a dense layer update w (in, out), b (out,); got w "
                         f"{tuple(w.shape)}, b {tuple(b.shape)}.")
    return w, b


def unit_inputs(layer_update: dict, eps: float = EPS) -> tuple[jax.Array, jax.Array]:
    """Every unit's ratio ``dW[:, j] / db_j`` of one dense layer's update.

    Args:
      layer_update: ``{"w": (in, out), "b": (out,)}``, a gradient or one-step weight
        change of a dense layer ``x @ w + b``.
      eps: units with ``|db_j| <= eps`` (inactive for the whole batch) give zeros.

    Returns:
      ``(inputs, active)``: (out, in) one candidate input per unit and the (out,) bool
      mask of the units with ``|db_j| > eps``.
    """
    w, b = _check(layer_update)
    active = jnp.abs(b) > eps
    safe = jnp.where(active, b, 1.0)
    return jnp.where(active[:, None], w.T / safe[:, None], 0.0), active


def recover_single(layer_update: dict) -> jax.Array:
    """The input of a dense layer from a batch-1 update, exactly (to float rounding).

    Every active unit gives the same input; the least-squares combination
    ``sum_j db_j dW[:, j] / sum_j db_j^2`` weighs each by its ``db_j^2``, so the best
    conditioned units dominate and inactive ones drop out.

    Returns:
      (in,) the layer's input.
    """
    w, b = _check(layer_update)
    return (w @ b) / jnp.maximum(jnp.sum(b * b), jnp.finfo(w.dtype).tiny)


def recover_per_label(layer_update: dict, labels: jax.Array) -> jax.Array:
    """The classifier's per-label rows: each example's input, for unique labels.

    Args:
      layer_update: the classifier's update ``{"w": (features, classes), "b": (classes,)}``.
      labels: (B,) int labels of the batch, all different (iDLG gives them at batch 1;
        the server may also know them).

    Returns:
      (B, features): row ``y_n``'s ratio, example ``n``'s features mixed with the
      others' at weights ``p_m,y_n / (p_n,y_n - 1 + ...)`` (exact at B = 1).
    """
    inputs, _ = unit_inputs(layer_update)
    return inputs[labels]


def recover_image(model: Model, update: Any, input_shape: tuple[int, ...]) -> jax.Array:
    """The image of a batch-1 update of a model whose first layer is dense with bias.

    Args:
      model: an MLP (:func:`jgi.models.mlp`; its first layer ``"hidden"`` takes the
        flattened image).
      update: the client's update (the structure of the params).
      input_shape: (H, W, C) of one image.

    Returns:
      (H, W, C) the image in the model's input space (normalised as the client's was).
    """
    first = model.layer_order[0] if model.layer_order else None
    if first is None or first not in update or "w" not in update[first] or \
            update[first]["w"].ndim != 2:
        raise ValueError(f"recover_image needs a model whose first layer is dense (the "
                         f"mlp's 'hidden'); {model.name} starts with {first!r}. Use "
                         "recover_features for the classifier's input.")
    return recover_single(update[first]).reshape(input_shape)


def recover_features(model: Model, update: Any) -> jax.Array:
    """The classifier's input (penultimate features) of a batch-1 update.

    For a CNN this is the first step of a feature-inversion attack: the features, not
    the image.
    """
    return recover_single(update[model.classifier])


def recover_victims(model: Model, updates: Any, input_shape: tuple[int, ...]) -> jax.Array:
    """:func:`recover_image` for many victims (leading axis on every leaf), vmapped."""
    return jax.vmap(lambda u: recover_image(model, u, input_shape))(updates)


def mixture_weights(recovered: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """How a recovered input mixes the batch's inputs (a diagnostic with the ground truth).

    Least squares ``recovered ~ sum_n lambda_n images_n``.

    Args:
      recovered: (in,) one unit's ratio.
      images: (B, in) the batch's inputs.

    Returns:
      ``(lambda, relative residual)``: (B,) the weights (they sum to 1 for a dense
      layer's unit) and ``|recovered - lambda @ images| / |recovered|``.
    """
    lam, *_ = jnp.linalg.lstsq(images.T, recovered)
    resid = jnp.linalg.norm(recovered - lam @ images) / jnp.maximum(
        jnp.linalg.norm(recovered), jnp.finfo(recovered.dtype).tiny)
    return lam, resid


DUPLICATE_RTOL = 1e-5  # two unit ratios this close (relative L2) count as one image


def pick_pure_units(layer_update: dict, rtol: float = DUPLICATE_RTOL,
                    lower: float | None = None, upper: float | None = None,
                    eps: float = EPS) -> tuple[jax.Array, jax.Array]:
    """An attacker-side rule for the units of a batch's first layer that hold one image.

    At batch B > 1 unit ``j``'s ratio is ``sum_n c_nj x_n / sum_n c_nj``
    (:func:`unit_inputs`): the image ``x_n`` itself when only example ``n`` activates the
    unit, a mixture otherwise. The rule uses only the update:

    - *duplicates*: two units that are pure for the same image give the same ratio (to
      float rounding), while two units that mix the same examples weigh them by their
      own ``c_nj = dL/dh_nj`` (the next layer's weights differ per unit) and so give
      different ratios. A unit is picked when another active unit's ratio lies within
      ``rtol`` (relative L2) of its own, and only the lowest-index unit of such a group
      is kept (one image per group);
    - *range* (optional, ``lower``/``upper``): a ratio with an entry outside the valid
      input range (by more than ``rtol`` of the range) is a mixture with negative
      weights and is dropped.

    A unit pure for an image no other unit isolates is missed (its ratio has no twin);
    the share of units pure for one image falls like ``2^-B`` on an untrained MLP, so
    the rule finds most images at small batches and few at large ones. Not from
    Phong et al. (who stop at batch 1); a choice of this project.

    Args:
      layer_update: ``{"w": (in, out), "b": (out,)}`` of the first dense layer.
      rtol: the duplicate tolerance.
      lower, upper: the valid input range in the model's input space (for normalised
        images, ``(0 - mean) / std`` and ``(1 - mean) / std``), or None for no check.
      eps: units with ``|db_j| <= eps`` are inactive.

    Returns:
      ``(inputs, picked)``: (out, in) every unit's ratio and the (out,) bool mask of the
      picked units, one per image the rule claims.
    """
    inputs, active = unit_inputs(layer_update, eps)
    norms = jnp.linalg.norm(inputs, axis=1)
    # row by row, not |a|^2 + |b|^2 - 2ab: that cancels to ~3e-3 of |a|^2 in float32,
    # above the tolerance (measured on normalised MNIST, |a|^2 ~ 900)
    dist2 = jax.lax.map(lambda row: jnp.sum((inputs - row) ** 2, axis=1), inputs)
    out = inputs.shape[0]
    close = (dist2 <= (rtol * jnp.maximum(norms[:, None], norms[None, :])) ** 2) \
        & active[:, None] & active[None, :] & ~jnp.eye(out, dtype=bool)
    has_twin = jnp.any(close, axis=1)
    earlier_twin = jnp.any(close & (jnp.arange(out)[None, :] < jnp.arange(out)[:, None]),
                           axis=1)
    picked = active & has_twin & ~earlier_twin
    if lower is not None or upper is not None:
        lo = -jnp.inf if lower is None else lower
        hi = jnp.inf if upper is None else upper
        tol = rtol * (1.0 if lower is None or upper is None else upper - lower)
        picked = picked & jnp.all((inputs >= lo - tol) & (inputs <= hi + tol), axis=1)
    return inputs, picked
