"""Gradient Pruning Inversion Attack (GPIA): the client's pruning mask applied to the dummy.

Core paper, section 4.2: the pruned entries of the shared update are exactly zero, so
the client's mask is ``Phi_C = 1(|G| > 0)`` (Eq. 2); the attacker multiplies its dummy
gradient by it before the gradient distance, so the zeros match by construction.
Choice: an entry of the client's gradient that was exactly zero before pruning (a dead
ReLU unit, for example) also reads as pruned; its dummy counterpart is masked too,
which is what the client's zero means either way.
"""

from __future__ import annotations

from jgi.attacks.mimic import Knowledge
from jgi.defenses.stack import DefenseStack

NAME = "gpia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.prune == 0:
        raise ValueError("GPIA targets gradient pruning; the stack has none "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(prune="observed")
