"""The client's gradient computation: (params, batch, randomness) -> shared update.

This is the central abstraction of jgi (SPEC.md): every attack optimises a dummy input
so that the attacker's run of this same function matches the update the client shared.
Here the update is the gradient of the mean cross-entropy for one local step, as in the
core paper's privacy experiments (batch size 1, one step, section 5.2). The model's
randomness (``noise``) is an explicit input; it is empty for deterministic models.
"""

from __future__ import annotations

import jax
import optax

from jgi.models.interface import Model, Noise, Params


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch, integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def client_loss(model: Model, params: Params, x: jax.Array, y: jax.Array,
                noise: Noise) -> jax.Array:
    """The client's training loss on a batch ``x`` (B, H, W, C), ``y`` (B,)."""
    return cross_entropy(model.apply(params, x, noise), y)


def client_update(model: Model, params: Params, x: jax.Array, y: jax.Array,
                  noise: Noise) -> Params:
    """The update a client shares after one local step: the gradient of its loss.

    Args:
      model: the model the federation trains.
      params: the global model's parameters the client received.
      x: the client's batch, (B, H, W, C), already normalised as the model expects.
      y: int labels (B,).
      noise: the model's randomness for this forward pass (``model.sample_noise``).

    Returns:
      The gradient with respect to ``params`` (same pytree structure).
    """
    return jax.grad(lambda p: client_loss(model, p, x, y, noise))(params)


def victim_updates(model: Model, params: Params, x: jax.Array, y: jax.Array,
                   noise: Noise) -> Params:
    """Every victim's update at once: one image per client step, vmapped over victims.

    Args:
      model: the model.
      params: shared parameters.
      x: victim images (V, H, W, C), normalised.
      y: victim labels (V,).
      noise: per-victim model randomness with a leading V axis (``{}`` if none).

    Returns:
      Gradients with a leading victim axis on every leaf.
    """
    def one(xi, yi, ni):
        return client_update(model, params, xi[None], yi[None], ni)

    return jax.vmap(one)(x, y, noise)
