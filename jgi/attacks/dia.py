"""Dropout Inversion Attack (DIA): relaxed dropout masks optimised with the image.

Scheliga, Maeder, Seeland, "Dropout is NOT all you need to prevent gradient leakage",
AAAI 2023. Masks start as Bernoulli(1 - p) samples, are optimised jointly with the
dummy image (same Adam, lr 1, no sign), clamped to [0, 1] after every step, and
regularised by ``1e-4 * sum_l |(1 - mean(mask_l)) - p|`` (the authors' code). The
other defenses of the stack are ignored.

:data:`ESTIMATOR` is that estimate of the masks, which :mod:`jgi.attacks.mimic` uses
wherever a :class:`~jgi.attacks.knowledge.Knowledge` says ``dropout="estimate"``
(CDIA too).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jgi.attacks.knowledge import Estimator, Knowledge, Regularizer
from jgi.defenses.stack import DefenseStack
from jgi.models.interface import Model

NAME = "dia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.dropout == 0:
        raise ValueError("DIA targets dropout; the stack has none "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(dropout="estimate")


def init_masks(key: jax.Array, model: Model, stack: DefenseStack, context: Any,
               input_shape: tuple[int, int, int]) -> Any:
    """The DIA init: a Bernoulli(1 - p) sample of the model's own masks (batch size 1)."""
    del stack, context
    return model.sample_noise(key, input_shape, 1)["dropout"]


def mask_regularizer(masks: Any, model: Model, stack: DefenseStack) -> jax.Array:
    """``sum_l |(1 - mean(mask_l)) - p|``: each layer's drop rate pulled toward p."""
    del stack
    return sum(jnp.abs((1.0 - jnp.mean(m)) - model.dropout) for m in jax.tree.leaves(masks))


def clamp_masks(masks: Any) -> Any:
    """Projects relaxed masks onto [0, 1]."""
    return jax.tree.map(lambda m: jnp.clip(m, 0.0, 1.0), masks)


ESTIMATOR = Estimator(
    name="masks", randomness="dropout", salt=1, init=init_masks,
    regularizer=Regularizer("mask_reg", mask_regularizer, lambda k: k.mask_reg_weight),
    project=clamp_masks)
