"""Differential Privacy Inversion Attack (DPIA): the DP noise optimised with the image.

Core paper, section 4.1: dummy noise Xi_A with one tensor per layer, initialised from
N(0, sigma^2 tau^2), added to the attacker's clipped dummy gradient (exactly as the
client privatises its own) and optimised jointly with the dummy image, regularised
toward mean 0 and the DP standard deviation. The paper gives the target, not the form
or weight of that regulariser; jgi's is
``1e-4 * sum_l [(mean_l / (sigma tau))^2 + (std_l / (sigma tau) - 1)^2]``
(:mod:`jgi.attacks.mimic`). The paper reports DPIA worse than plain IG: the noise
estimate absorbs the mismatch instead of the image fixing it.
"""

from __future__ import annotations

from jgi.attacks.mimic import Knowledge
from jgi.defenses.stack import DefenseStack

NAME = "dpia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.dp is None:
        raise ValueError("DPIA targets DP-SGD; the stack has none "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(dp="estimate")
