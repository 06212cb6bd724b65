"""Fixed-point encoding of float updates into a ring or field, and back.

Flower's SecAgg+ workflow is the behavioural reference (its defaults: clipping range
8, quantisation range 2^22, modulus 2^32): every entry is clipped to ``[-c, c]``,
mapped affinely to ``[0, q]`` and rounded; the server's sum of ``n`` such vectors,
taken modulo ``M``, is exact as long as ``n * q < M``, and maps back to
``sum - n * c`` in floats.

Choice where Flower differs: rounding is to the nearest integer (deterministic), not
stochastic, so the error bound is deterministic: at most ``c / q`` per entry and
client (``n * c / q`` on the sum, 1.9e-6 per client with the defaults), on top of what
clipping removes. Stochastic rounding would make the error unbiased but random.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Quantization:
    """Clip-and-round fixed point encoding (defaults: Flower's SecAgg+).

    Attributes:
      clip: clipping range ``c``: entries are clipped to ``[-c, c]`` (8).
      levels: quantisation range ``q``: ``[-c, c]`` maps onto ``0..q`` (2^22).
      modulus: the ring or field size ``M`` the sum is taken in (2^32).
    """

    clip: float = 8.0
    levels: int = 2**22
    modulus: int = 2**32

    def __post_init__(self):
        if not self.clip > 0:
            raise ValueError(f"Quantization.clip must be > 0, got {self.clip}.")
        if not 2 <= self.levels < self.modulus:
            raise ValueError(f"Quantization.levels must be in [2, modulus={self.modulus}), got "
                             f"{self.levels}.")
        if self.modulus > 2**32:
            raise ValueError(f"Quantization.modulus must be <= 2^32 (uint32 arithmetic), got "
                             f"{self.modulus}.")

    @property
    def step(self) -> float:
        return 2 * self.clip / self.levels

    def max_clients(self) -> int:
        """The most inputs whose sum does not wrap around the modulus."""
        return (self.modulus - 1) // self.levels

    def error_bound(self, num_clients: int) -> float:
        """Largest |dequantised sum - sum of clipped inputs| per entry."""
        return num_clients * self.step / 2

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Float vector -> integers in ``[0, levels]`` (uint32)."""
        x = np.clip(np.asarray(x, np.float64), -self.clip, self.clip)
        return np.rint((x + self.clip) / self.step).astype(np.uint32)

    def decode_sum(self, total: np.ndarray, num_clients: int) -> np.ndarray:
        """The float sum of ``num_clients`` encoded vectors from their sum modulo ``M``.

        Raises:
          ValueError: ``num_clients`` inputs could have wrapped around the modulus.
        """
        if num_clients > self.max_clients():
            raise ValueError(f"{num_clients} clients' sum can wrap around the modulus "
                             f"{self.modulus} at {self.levels} levels; at most "
                             f"{self.max_clients()} clients, or fewer levels.")
        total = np.asarray(total).astype(np.int64) % self.modulus
        return total.astype(np.float64) * self.step - num_clients * self.clip


FLOWER_SECAGG_PLUS = Quantization()
"""Flower's SecAgg+ defaults: clipping range 8, quantisation range 2^22, modulus 2^32."""

__all__ = ["FLOWER_SECAGG_PLUS", "Quantization"]
