"""Differential Privacy Inversion Attack (DPIA): the DP noise optimised with the image.

Core paper, section 4.1: dummy noise Xi_A with one tensor per layer, initialised from
N(0, sigma^2 tau^2), added to the attacker's clipped dummy gradient (exactly as the
client privatises its own: clipped to tau, noise added, divided by the batch size 1)
and optimised jointly with the dummy image, unconstrained, regularised toward mean 0
and the DP standard deviation. The paper gives the target, not the form or weight of
that regulariser; jgi's is
``dp_reg_weight * sum_l [(mean_l / (sigma tau))^2 + (std_l / (sigma tau) - 1)^2]``,
dimensionless and weighted 1e-4 like DIA's. The paper reports DPIA worse than plain IG:
the noise estimate absorbs the mismatch instead of the image fixing it.

:data:`ESTIMATOR` is that estimate of Xi, which :mod:`jgi.attacks.mimic` uses wherever
a :class:`~jgi.attacks.knowledge.Knowledge` says ``dp="estimate"``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jgi.attacks.knowledge import Estimator, Knowledge, Regularizer
from jgi.defenses import dp as dp_lib
from jgi.defenses.stack import DefenseStack
from jgi.models.interface import Model

NAME = "dpia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    if stack.dp is None:
        raise ValueError("DPIA targets DP-SGD; the stack has none "
                         f"({stack.names or 'no defense'}).")
    return Knowledge(dp="estimate")


def init_noise(key: jax.Array, model: Model, stack: DefenseStack, context: Any,
               input_shape: tuple[int, int, int]) -> Any:
    """Xi_A ~ N(0, (sigma tau)^2), one tensor per parameter of ``context["params"]``."""
    del model, input_shape
    return dp_lib.sample_noise(key, context["params"], stack.dp)


def noise_regularizer(xi: Any, model: Model, stack: DefenseStack) -> jax.Array:
    """``sum_l [(mean_l / (sigma tau))^2 + (std_l / (sigma tau) - 1)^2]``."""
    del model
    noise_std = stack.dp.noise_std
    return sum(jnp.square(jnp.mean(leaf) / noise_std)
               + jnp.square(jnp.std(leaf) / noise_std - 1.0)
               for leaf in jax.tree.leaves(xi))


ESTIMATOR = Estimator(
    name="xi", randomness="dp", salt=3, init=init_noise,
    regularizer=Regularizer("dp_reg", noise_regularizer, lambda k: k.dp_reg_weight))
