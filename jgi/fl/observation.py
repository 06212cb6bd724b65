"""What the server observes of a client: the threat model's grant, as one pytree.

Every attack in jgi starts from an :class:`Observation`: the update the client shared,
the global parameters it was computed from, and the public facts of the local training
that produced it (the :class:`~jgi.fl.local.LocalTraining`: optimiser, learning rate,
epochs, batch size; the number of local samples; the round). What the server does
*not* see (the client's data, its dropout masks, bottleneck eps and DP noise) is not
in it; a white-box oracle such as WIIG is handed that randomness separately.

:func:`observe` runs the client: one step on its batch sharing the defended gradient
(:data:`~jgi.fl.local.ONE_STEP`, the core paper's victim update), or a real FedAvg
local training sharing ``W_t - W_k``. :func:`observe_victims` does it for many victims
at once (``vmap``), each victim a client holding one image, as the core paper's
experiments do.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jgi.defenses.stack import NO_DEFENSE, DefenseStack
from jgi.defenses import input_encoding
from jgi.fl.client import (ClientRandomness, client_update, num_classes, one_hot,
                           sample_randomness, victim_updates)
from jgi.fl.local import ONE_STEP, LocalTraining, make_local_training
from jgi.models.interface import Model, Params


@struct.dataclass
class Observation:
    """What the server sees of one client (or, with a leading axis, of many).

    Attributes:
      update: the shared update, with the structure of ``params``: the defended
        gradient when ``local.shares == "gradient"``, else ``W_t - W_k`` (global minus
        local parameters after training).
      params: the global parameters ``W_t`` the client started from.
      local: the local training's public facts (static).
      num_samples: how many examples the client trained on (static).
      round: the communication round (static; decays the learning rate).
    """

    update: Params
    params: Params
    local: LocalTraining = struct.field(pytree_node=False, default=ONE_STEP)
    num_samples: int = struct.field(pytree_node=False, default=1)
    round: int = struct.field(pytree_node=False, default=0)

    @property
    def kind(self) -> str:
        """"gradient" or "weight_delta"."""
        return self.local.shares

    def require_single_gradient(self, attack: str) -> None:
        """Refuses an observation that is not one image's one-step gradient, saying why."""
        if self.kind != "gradient" or self.num_samples != 1:
            raise ValueError(
                f"{attack} inverts one image's one-step gradient; this observation is a "
                f"{self.kind} of {self.num_samples} samples over "
                f"{self.local.num_steps(self.num_samples)} local steps. Observe the client "
                "with jgi.fl.ONE_STEP on a batch of one, or use an attack for multi-step "
                "updates.")


def observe(model: Model, params: Params, x: jax.Array, y: jax.Array, key: jax.Array | None,
            stack: DefenseStack = NO_DEFENSE, local: LocalTraining = ONE_STEP, *,
            round_index: int = 0, randomness: ClientRandomness | None = None) -> Observation:
    """Runs one client's local training and returns what the server observes.

    Args:
      model: the model, with the stack's model-level defenses built in.
      params: the global parameters ``W_t``.
      x: the client's examples (n, H, W, C), normalised.
      y: their labels, int (n,) or soft (n, classes).
      key: the client's randomness (dropout, eps, DP noise, shuffling, encoding). A
        single full-batch step draws its randomness from ``key`` itself
        (:func:`jgi.fl.client.sample_randomness`).
      stack: the client's defenses; they act inside every local step.
      local: the local training (default :data:`~jgi.fl.local.ONE_STEP`).
      round_index: the round, for the learning-rate decay.
      randomness: for a single step, the client's randomness as given (instead of
        drawing it from ``key``).

    Returns:
      The :class:`Observation`.
    """
    n = x.shape[0]
    input_shape = tuple(x.shape[1:])
    if local.shares == "gradient":
        if not local.is_single_step(n):
            raise ValueError(
                f"A client sharing its gradient takes one step on its whole batch; {n} "
                f"samples in batches of {local.batch(n)} make "
                f"{local.num_steps(n)} steps. Use shares='weight_delta' for multi-step "
                "training.")
        if stack.encoding is not None:
            raise ValueError("observe: an input encoding needs the client's pool of images "
                             "to mix with; encode the batch first (jgi.defenses."
                             "input_encoding) or use shares='weight_delta'.")
        if randomness is None:
            if key is None:
                raise ValueError("observe needs key= or randomness= for the client's step.")
            randomness = sample_randomness(key, model, params, stack, input_shape, n)
        update = client_update(model, params, x, y, randomness, stack)
    else:
        if randomness is not None:
            raise ValueError("randomness= fixes a single step's randomness; a multi-step "
                             "client draws each step's from key=.")
        train = make_local_training(model, stack, local, input_shape, n, round_index)
        opt_state = local.optimizer_for(round_index).init(params)
        new_params, _, _ = train(params, opt_state, x, y, key)
        update = jax.tree.map(jnp.subtract, params, new_params)
    return Observation(update=update, params=params, local=local, num_samples=n,
                       round=round_index)


def observe_victims(model: Model, params: Params, x: jax.Array, y: jax.Array,
                    randomness: ClientRandomness | Any, stack: DefenseStack = NO_DEFENSE, *,
                    pool: tuple[jax.Array, jax.Array] | None = None,
                    encoding_key: jax.Array | None = None) -> tuple[Observation, jax.Array]:
    """One-step gradients of many victims at once, each victim a client with one image.

    Args:
      model, params, stack: as in :func:`observe`.
      x: victim images (V, H, W, C), normalised.
      y: int labels (V,).
      randomness: per-victim :class:`~jgi.fl.client.ClientRandomness`, leading V axis
        (:func:`jgi.fl.client.sample_victim_randomness`).
      pool: for a stack with an input encoding, the victims' client's images and int
        labels ``(pool_x, pool_y)`` that each victim is mixed with.
      encoding_key: the key of the victims' encodings (one draw for all victims).

    Returns:
      ``(observation, labels)``: the :class:`Observation` (``update`` with a leading
      victim axis; ``params`` without) and the labels the client trained with (``y``,
      or the encoding's soft labels).
    """
    if stack.encoding is not None:
        if pool is None or encoding_key is None:
            raise ValueError(f"The stack encodes its inputs ({stack.encoding.kind}): pass "
                             "pool=(client images, labels) and encoding_key=.")
        pool_x, pool_y = pool
        nc = num_classes(model, params)
        mixing = input_encoding.sample_mixing(encoding_key, stack.encoding, x.shape[0],
                                              pool_y.shape[0], tuple(x.shape[1:]))
        x, y = input_encoding.encode(x, one_hot(y, nc), pool_x, one_hot(pool_y, nc), mixing)
    update = victim_updates(model, params, x, y, randomness, stack)
    return Observation(update=update, params=params, local=ONE_STEP, num_samples=1,
                       round=0), y
