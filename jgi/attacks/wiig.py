"""Well-Informed Inverting Gradients (WIIG): the attacker is handed the client's randomness.

Scheliga et al., "Dropout is NOT all you need to prevent gradient leakage" (AAAI 2023)
for dropout masks; extended in the core paper (sections 4.1 and 4.3) to the DP noise
Xi and the bottleneck eps. A proof of concept, not a realistic attacker: with the true
randomness the dummy update of the true image equals the observed update exactly.
Pruning needs no hand-out: the mask is read off the update (as GPIA does).
"""

from __future__ import annotations

from jgi.attacks.mimic import Knowledge
from jgi.defenses.stack import DefenseStack

NAME = "wiig"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    """Everything the stack randomises is known; pruning is read off the update."""
    return Knowledge(dropout="known" if stack.dropout > 0 else "ignore",
                     bottleneck="known" if stack.bottleneck else "ignore",
                     dp="known" if stack.dp is not None else "ignore",
                     prune="observed" if stack.prune > 0 else "ignore")
