"""A stack's gradient-level defenses as one optax chain: clip -> noise -> mean -> prune.

The order is the core paper's Algorithm 2, ``GP(DP(grad))`` (Scheliga et al.,
"Combining stochastic defenses to resist gradient inversion: an ablation study"):

1. DP-SGD (Abadi et al. 2016), when the stack has it: each example's gradient clipped
   to norm tau and summed (:func:`jgi.defenses.dp.clip_per_example_grads`), the noise
   Xi added and the sum divided by the batch size
   (:func:`jgi.defenses.dp.add_noise_and_average`). Without DP the per-example
   gradients are simply averaged.
2. Gradient pruning (Lin et al. 2018), when the stack has it: the smallest fraction of
   each layer's entries zeroed (:func:`jgi.defenses.pruning.prune_by_magnitude`).

The input is :class:`~jgi.defenses.dp.PerExample` gradients (a leading example axis).
Two cheaper forms enter the same chain, so every client computation goes through it:
a :class:`~jgi.defenses.dp.ClippedSum` that a fused implementation already clipped
(``jgi.fl.client`` computes it as one gradient of a factor-weighted loss for batches of
more than one example), and, without DP, the plain mean gradient (the gradient of the
batch's mean loss), which the averaging stage passes on. The client's update
(:func:`jgi.fl.client_update`), hence every victim update, every attacker's dummy update
and every FedAvg local step, is ``gradient_transform(stack).update(...)``.

The noise is an explicit input: ``update(grads, state, params, noise=Xi)`` or
``key=`` to sample it. Model-level defenses (dropout, bottlenecks) are part of the
model's forward pass and input encodings act on the batch, so neither appears here.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from jgi import defenses
    >>> tx = defenses.gradient_transform(defenses.from_names("dp,prune"))
    >>> per_example = defenses.dp.PerExample({"w": jnp.ones((4, 3))})
    >>> update, _ = tx.update(per_example, tx.init(None), key=jax.random.key(0))
    >>> update["w"].shape
    (3,)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jgi.defenses import dp, pruning
from jgi.defenses.stack import DefenseStack


class AverageState(NamedTuple):
    """Averaging keeps no state."""


def average_examples() -> optax.GradientTransformation:
    """:class:`~jgi.defenses.dp.PerExample` gradients -> their mean; a mean passes as is."""

    def init(params):
        del params
        return AverageState()

    def update(updates, state, params=None):
        del params
        if isinstance(updates, dp.ClippedSum):
            raise ValueError("A clipped sum (dp.ClippedSum) needs DP-SGD's noise stage, but "
                             "the stack has no DP; pass per-example or mean gradients.")
        if isinstance(updates, dp.PerExample):
            return jax.tree.map(lambda g: jnp.mean(g, axis=0), updates.grads), state
        return updates, state

    return optax.GradientTransformation(init, update)


def gradient_transform(stack: DefenseStack) -> optax.GradientTransformationExtraArgs:
    """The stack's gradient-level defenses, in the order clip -> noise -> mean -> prune.

    Args:
      stack: the client's :class:`~jgi.defenses.stack.DefenseStack`; only ``dp`` and
        ``prune`` act here.

    Returns:
      An optax transformation. ``update(grads, state, params=None, *, noise=None,
      key=None)`` takes per-example, clipped-sum or (without DP) mean gradients and
      returns the update the client shares; with DP, exactly one of ``noise`` or
      ``key`` must be given.
    """
    if stack.dp is not None:
        stages = [dp.clip_per_example_grads(stack.dp.clip_norm),
                  dp.add_noise_and_average(stack.dp)]
    else:
        stages = [average_examples()]
    if stack.prune > 0:
        stages.append(pruning.prune_by_magnitude(stack.prune))
    return optax.chain(*stages)
