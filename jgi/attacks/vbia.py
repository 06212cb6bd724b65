"""Variational Bottleneck Inversion Attack (VBIA): the bottleneck's eps optimised.

Core paper, section 4.3: a dummy reparameterisation matrix eps_A ~ N(0, I) replaces the
sampled one in every forward pass and is optimised jointly with the dummy image (same
Adam, lr 1, no sign, no regulariser: the paper states none), for PRECODE and CVB alike.
"""

from __future__ import annotations

from jgi.attacks.mimic import Knowledge
from jgi.defenses.stack import DefenseStack

NAME = "vbia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.bottleneck is None:
        raise ValueError("VBIA targets PRECODE or CVB; the stack has neither "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(bottleneck="estimate")
