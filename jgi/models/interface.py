"""The model interface every jgi model follows.

A model is a bundle of pure functions (no hidden state, no implicit randomness):

    params = model.init(key, input_shape)              # input_shape = (H, W, C)
    noise = model.sample_noise(key, input_shape, batch) # the model's randomness
    logits = model.apply(params, x, noise)              # x: (batch, H, W, C)

``noise`` holds every random quantity of a forward pass (dropout masks, variational
bottleneck epsilon) as explicit arrays, so a caller can sample it from a key *or
supply* it: that is what lets an attacker mimic, estimate or ignore a client's
randomness. A deterministic model's noise is an empty dict.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Params = Any  # a pytree of arrays
Noise = Any  # a pytree of arrays, possibly empty


@dataclasses.dataclass(frozen=True)
class Model:
    """A model as pure functions.

    Attributes:
      name: registry name, e.g. "cnn".
      init: ``(key, input_shape) -> params``.
      apply: ``(params, x, noise) -> logits``, x of shape (batch, H, W, C).
      sample_noise: ``(key, input_shape, batch_size) -> noise`` for one forward pass.
      classifier: key of the last (fully connected) layer in ``params``; its gradient
        reveals the label (iDLG).
      options: the hashable options the model was built with, for records.
    """

    name: str
    init: Callable[[jax.Array, tuple[int, ...]], Params]
    apply: Callable[[Params, jax.Array, Noise], jax.Array]
    sample_noise: Callable[[jax.Array, tuple[int, ...], int], Noise]
    classifier: str
    options: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.options)}


def no_noise(key: jax.Array, input_shape: tuple[int, ...], batch_size: int) -> dict:
    """``sample_noise`` of a deterministic model."""
    del key, input_shape, batch_size
    return {}
