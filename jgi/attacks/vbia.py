"""Variational Bottleneck Inversion Attack (VBIA): the bottleneck's eps optimised.

Core paper, section 4.3: a dummy reparameterisation matrix eps_A ~ N(0, I) replaces the
sampled one in every forward pass and is optimised jointly with the dummy image (same
Adam, lr 1, no sign, no regulariser: the paper states none), for PRECODE and CVB alike.
eps_A is unconstrained (no projection).

:data:`ESTIMATOR` is that estimate of eps, which :mod:`jgi.attacks.mimic` uses wherever
a :class:`~jgi.attacks.knowledge.Knowledge` says ``bottleneck="estimate"`` (CDIA too).
"""

from __future__ import annotations

from typing import Any

import jax

from jgi.attacks.knowledge import Estimator, Knowledge
from jgi.defenses.stack import DefenseStack
from jgi.models.interface import Model

NAME = "vbia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.bottleneck is None:
        raise ValueError("VBIA targets PRECODE or CVB; the stack has neither "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(bottleneck="estimate")


def init_eps(key: jax.Array, model: Model, stack: DefenseStack, context: Any,
             input_shape: tuple[int, int, int]) -> jax.Array:
    """eps_A ~ N(0, I), the shape of the model's bottleneck noise (batch size 1)."""
    del stack, context
    shape = jax.eval_shape(lambda k: model.sample_noise(k, input_shape, 1), key)["eps"].shape
    return jax.random.normal(key, shape)


ESTIMATOR = Estimator(name="eps", randomness="bottleneck", salt=2, init=init_eps)
