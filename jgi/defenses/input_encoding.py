"""Input-encoding defenses: MixUp and InstaHide, applied by the client before its update.

MixUp (Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization",
ICLR 2018), as a gradient-inversion defense in the form evaluated by Huang et al. (2021,
"Evaluating gradient inversion attacks and defenses in federated learning", the
GradAttack catalogue): each private example is replaced by a convex combination of
itself and ``k - 1`` other images of the client's own data, with the same combination
of their one-hot labels. InstaHide (Huang, Song, Li, Arora, ICML 2020) mixes ``k = 4``
images the same way and then multiplies every pixel by an independent random sign.

Choices (stated because the sources differ in details):
- The private example always takes part, as component 0; its partners are drawn
  uniformly without replacement from the client's pool (which may contain the example
  itself; an encoding of a single-image pool is the identity mix).
- Weights ~ Dirichlet(alpha, ..., alpha) with alpha = 1 by default; the catalogue's
  implementation draws Dirichlet(3, 1, ..., 1) and rejects draws whose largest weight
  exceeds an upper bound, which ``first_alpha`` and ``max_weight`` reproduce.
- The sign flip acts on the model's (normalised, roughly zero-centred) input, as
  InstaHide flips pixels of images centred at zero.

All randomness is explicit: :func:`sample_mixing` draws it from a key, :func:`encode`
applies a given :class:`Mixing`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

ENCODINGS = ("mixup", "instahide")


@dataclasses.dataclass(frozen=True)
class EncodingConfig:
    """How a client encodes its inputs.

    Attributes:
      kind: "mixup" or "instahide".
      k: images per encoding (MixUp: 2, InstaHide: 4).
      alpha: Dirichlet concentration of the partners' weights.
      first_alpha: Dirichlet concentration of the private example's weight.
      max_weight: redraw (up to 20 draws) while any weight exceeds this; 1 disables.
    """

    kind: str = "mixup"
    k: int = 2
    alpha: float = 1.0
    first_alpha: float = 1.0
    max_weight: float = 1.0

    def __post_init__(self):
        if self.kind not in ENCODINGS:
            raise ValueError(
                f"Unknown input encoding {self.kind!r}; valid: {', '.join(ENCODINGS)}.")
        if self.k < 1:
            raise ValueError(f"An encoding mixes k >= 1 images, got k={self.k}.")

    @property
    def sign_flip(self) -> bool:
        return self.kind == "instahide"


MIXUP = EncodingConfig("mixup", k=2)
INSTAHIDE = EncodingConfig("instahide", k=4)


class Mixing(NamedTuple):
    """The randomness of one encoded batch.

    Attributes:
      weights: (B, k) convex weights; column 0 is the private example's.
      partners: (B, k - 1) indices into the pool.
      signs: (B, H, W, C) of +-1 for InstaHide, or None.
    """

    weights: jax.Array
    partners: jax.Array
    signs: jax.Array | None


def sample_mixing(key: jax.Array, config: EncodingConfig, batch: int, pool_size: int,
                  input_shape: tuple[int, ...]) -> Mixing:
    """Draws weights, partners and (for InstaHide) signs for a batch."""
    kw, kp, ks = jax.random.split(key, 3)
    alphas = jnp.asarray([config.first_alpha] + [config.alpha] * (config.k - 1), jnp.float32)

    def draw_weights(k):
        # Rejection sampling with a fixed budget: 20 candidates, the first one whose
        # largest weight is within max_weight wins (the last one if none is).
        candidates = jax.random.dirichlet(k, alphas, (20,))
        ok = jnp.max(candidates, axis=1) <= config.max_weight
        first_ok = jnp.where(jnp.any(ok), jnp.argmax(ok), 19)
        return candidates[first_ok]

    weights = jax.vmap(draw_weights)(jax.random.split(kw, batch))
    partner_keys = jax.random.split(kp, batch)
    partners = jax.vmap(lambda k: jax.random.choice(
        k, pool_size, (config.k - 1,), replace=pool_size < config.k - 1))(partner_keys)
    signs = None
    if config.sign_flip:
        signs = jnp.where(jax.random.bernoulli(ks, 0.5, (batch, *input_shape)), 1.0, -1.0)
    return Mixing(weights=weights, partners=partners, signs=signs)


def encode(x: jax.Array, y_onehot: jax.Array, pool_x: jax.Array, pool_y_onehot: jax.Array,
           mixing: Mixing) -> tuple[jax.Array, jax.Array]:
    """Applies a :class:`Mixing` to a batch.

    Args:
      x: private inputs (B, H, W, C), in the model's input space.
      y_onehot: their labels (B, classes).
      pool_x, pool_y_onehot: the client's images and one-hot labels to mix with.
      mixing: weights, partners and signs.

    Returns:
      ``(encoded inputs (B, H, W, C), soft labels (B, classes))``.
    """
    w = mixing.weights
    mixed_x = w[:, 0, None, None, None] * x + jnp.einsum(
        "bj,bjhwc->bhwc", w[:, 1:], pool_x[mixing.partners])
    mixed_y = w[:, :1] * y_onehot + jnp.einsum("bj,bjc->bc", w[:, 1:],
                                              pool_y_onehot[mixing.partners])
    if mixing.signs is not None:
        mixed_x = mixed_x * mixing.signs
    return mixed_x, mixed_y
