"""Partial Inverting Gradients (PIG, the "ignore attack") against variational bottlenecks.

Scheliga, Maeder, Seeland, "Privacy Preserving Federated Learning with Convolutional
Variational Bottlenecks" (2024b): the gradients of the bottleneck decoder and of every
later layer are the most stochastic, so they are left out of the gradient distance;
eps is sampled afresh every step as in IG. For the CNN with a CVB after block 0 this
keeps conv0 and the CVB's encoder, as the authors' ``ignore_gradient_layers`` do. The
kept layers are a property of the model,
:meth:`jgi.models.Model.leaves_before_bottleneck_decoder`, which works for any model
whose ``layer_order`` names its ``"bottleneck"``.
"""

from __future__ import annotations

from jgi.attacks.mimic import Knowledge
from jgi.defenses.stack import DefenseStack

NAME = "pig"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.bottleneck is None:
        raise ValueError("PIG targets PRECODE or CVB; the stack has neither "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(bottleneck="exclude")
