"""Gradient distance functions (GDF): how far a dummy update is from the observed one.

Both take two pytrees of the same structure (for example the dummy and the observed
gradients) and return a scalar. ``leaf_mask`` optionally selects which leaves count,
which is how an attack leaves layers out of the distance.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp


def _pairs(a: Any, b: Any, leaf_mask: Sequence[bool] | None):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"Gradient pytrees differ: {len(la)} vs {len(lb)} leaves.")
    if leaf_mask is None:
        return list(zip(la, lb, strict=True))
    if len(leaf_mask) != len(la):
        raise ValueError(f"leaf_mask has {len(leaf_mask)} entries for {len(la)} leaves.")
    pairs = [(x, y) for x, y, keep in zip(la, lb, leaf_mask, strict=True) if keep]
    if not pairs:
        raise ValueError("leaf_mask leaves no gradient entry to compare.")
    return pairs


def cosine_distance(a: Any, b: Any, *, leaf_mask: Sequence[bool] | None = None,
                    eps: float = 1e-8) -> jax.Array:
    """1 - cosine similarity over all gradient entries, concatenated.

    Inverting Gradients (Geiping et al., NeurIPS 2020) as the core paper's authors run
    it: one cosine over the concatenation of every layer's gradient (not a mean of
    per-layer cosines), ``1 - <a, b> / (|a| |b| + eps)``.
    """
    pairs = _pairs(a, b, leaf_mask)
    dot = sum(jnp.vdot(x, y) for x, y in pairs)
    na = sum(jnp.vdot(x, x) for x, _ in pairs)
    nb = sum(jnp.vdot(y, y) for _, y in pairs)
    return 1.0 - dot / (jnp.sqrt(na) * jnp.sqrt(nb) + eps)


def l2_distance(a: Any, b: Any, *, leaf_mask: Sequence[bool] | None = None) -> jax.Array:
    """Sum of squared differences over all gradient entries (DLG, Zhu et al. 2019)."""
    pairs = _pairs(a, b, leaf_mask)
    return sum(jnp.sum(jnp.square(x - y)) for x, y in pairs)


DISTANCES = {"cosine": cosine_distance, "l2": l2_distance}
