"""Dropout with explicit masks (Srivastava et al. 2014), a model-level defense.

The layer lives with the models that build it in (``models.get(name, dropout=p)``);
:mod:`jgi.defenses.dropout` re-exports it for users who look for it among the defenses.

Scheliga et al. (2023, "Dropout is NOT all you need to prevent gradient leakage")
showed that the dropout masks a client samples hide its gradient from IG, and that an
attacker who optimises relaxed masks (DIA) gets it back. Here a mask is an explicit
array, so a model can sample it from a key, a caller can supply the client's true mask
(WIIG), and an attacker can optimise a relaxed one in [0, 1] (DIA).

A mask ``m`` multiplies the activation with inverted scaling, ``x * m / (1 - p)``, so
its expected value is the identity for Bernoulli(1 - p) masks. Rate 0 means no dropout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """A float32 keep-mask: 1 with probability ``1 - rate``, else 0."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}.")
    return jax.random.bernoulli(key, 1.0 - rate, shape).astype(jnp.float32)


def apply_mask(x: jax.Array, mask: jax.Array, rate: float, *, name: str = "dropout") -> jax.Array:
    """``x * mask / (1 - rate)``; ``mask`` may be relaxed to [0, 1] (DIA)."""
    if mask.shape != x.shape:
        raise ValueError(f"{name}: mask of shape {mask.shape} for activation of shape {x.shape}.")
    return x * mask / (1.0 - rate)
