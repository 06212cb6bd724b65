"""Dropout Inversion Attack (DIA): relaxed dropout masks optimised with the image.

Scheliga, Maeder, Seeland, "Dropout is NOT all you need to prevent gradient leakage",
AAAI 2023. Masks start as Bernoulli(1 - p) samples, are optimised jointly with the
dummy image (same Adam, lr 1, no sign), clamped to [0, 1] after every step, and
regularised by ``1e-4 * sum_l |(1 - mean(mask_l)) - p|`` (the authors' code). The
other defenses of the stack are ignored.
"""

from __future__ import annotations

from jgi.attacks.mimic import Knowledge
from jgi.defenses.stack import DefenseStack

NAME = "dia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.dropout == 0:
        raise ValueError("DIA targets dropout; the stack has none "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(dropout="estimate")
