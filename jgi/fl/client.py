"""The client's gradient computation: (params, batch, randomness) -> shared update.

This is the central abstraction of jgi (SPEC.md): every attack optimises a dummy input
so that the attacker's run of this same function matches the update the client shared.
One pure function, with all of the client's randomness an explicit input
(:class:`ClientRandomness`):

1. forward pass with the model's stochastic layers: dropout masks Psi and bottleneck
   noise eps (``randomness.model``, leading batch axis);
2. loss = cross-entropy + the model's penalty (beta times the bottleneck's KL);
3. without DP: the gradient of the batch's mean loss. With DP-SGD: per-example
   gradients (``vmap`` of ``grad``), each clipped to norm tau, summed, plus the Gaussian
   noise Xi (``randomness.dp``), divided by the batch size;
4. gradient pruning: the smallest fraction p of each layer's entries set to zero.

Order as in the core paper's Algorithm 2: ``GP(DP(grad))``; steps 3-4 are the stack's
one optax chain, :func:`jgi.defenses.gradient_transform`. Input encodings (MixUp,
InstaHide) act on the batch before this function.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jgi import checks
from jgi.defenses import dp as dp_lib
from jgi.defenses.chain import gradient_transform
from jgi.defenses.stack import NO_DEFENSE, DefenseStack
from jgi.models.interface import Model, Noise, Params


class ClientRandomness(NamedTuple):
    """Every random quantity of one client update.

    Attributes:
      model: the model's noise for the batch (``model.sample_noise``), leading batch axis.
      dp: the DP noise Xi (the structure of the params, std sigma * tau), or None.
    """

    model: Noise = {}
    dp: Any = None


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; integer labels (B,) or soft labels (B, classes)."""
    if labels.ndim == logits.ndim:
        return optax.softmax_cross_entropy(logits, labels).mean()
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def client_loss(model: Model, params: Params, x: jax.Array, y: jax.Array,
                noise: Noise) -> jax.Array:
    """The client's training loss on a batch: cross-entropy plus the model's penalty."""
    logits, penalty = model.forward(params, x, noise)
    return cross_entropy(logits, y) + penalty


def sample_randomness(key: jax.Array, model: Model, params: Params, stack: DefenseStack,
                      input_shape: tuple[int, ...], batch_size: int) -> ClientRandomness:
    """Samples all randomness of one client update under ``stack``."""
    k_model, k_dp = jax.random.split(key)
    noise = model.sample_noise(k_model, tuple(input_shape), batch_size)
    xi = dp_lib.sample_noise(k_dp, params, stack.dp) if stack.dp is not None else None
    return ClientRandomness(model=noise, dp=xi)


def _example_loss(model: Model, params: Params, xi: jax.Array, yi: jax.Array,
                  ni: Noise) -> jax.Array:
    """One example's loss (its own randomness), as a batch of one."""
    return client_loss(model, params, xi[None], yi[None], jax.tree.map(lambda a: a[None], ni))


def per_example_gradients(model: Model, params: Params, x: jax.Array, y: jax.Array,
                          noise: Noise) -> Params:
    """Gradients of each example's loss: ``vmap`` of ``grad``, leading batch axis."""
    return jax.vmap(lambda xi, yi, ni: jax.grad(_example_loss, argnums=1)(
        model, params, xi, yi, ni))(x, y, noise)


def clipped_gradient_sum(model: Model, params: Params, x: jax.Array, y: jax.Array,
                         noise: Noise, clip_norm: float) -> Params:
    """``sum_i min(1, tau / |g_i|) g_i`` without keeping the per-example gradients.

    The per-example norms come from ``vmap`` of ``grad`` (only their squared sums are
    kept); the clipped sum is then one gradient of the factor-weighted loss
    ``sum_i c_i l_i``, the factors held fixed with respect to the parameters (they still
    depend on ``x``, so attacks differentiate through the clipping). Equals
    ``dp.privatize``'s clipped sum up to float rounding; on 2 CPU cores a batch of 64 on
    the PRECODE CNN takes a sixth of the time (``benchmarks/dp_clipping.py``), since
    the 64 per-example copies of the bottleneck's dense layers are never scaled and
    summed.
    """
    norms = dp_lib.global_norms(per_example_gradients(model, params, x, y, noise))
    factor = dp_lib.clip_factors(norms, clip_norm)

    def weighted_loss(p):
        losses = jax.vmap(lambda xi, yi, ni: _example_loss(model, p, xi, yi, ni))(x, y, noise)
        return jnp.sum(factor * losses)

    return jax.grad(weighted_loss)(params)


def check_batch(model: Model, params: Params, x: jax.Array, y: jax.Array, *,
                where: str) -> None:
    """``x`` is a (B, H, W, C) batch and ``y`` its labels: int (B,) or float (B, classes).

    Trace-time only (static shapes and dtypes); under ``vmap`` it sees one client's
    batch. The soft labels' class count is checked against the classifier's when the
    params have it.

    Raises:
      ValueError: naming ``where``, the argument, the expected and the given shape.
      TypeError: labels of the wrong dtype for their rank.
    """
    checks.rank(x, 4, name="x", where=where, layout="(batch, H, W, C)")
    checks.rank(y, {1, 2}, name="y", where=where,
                layout="(batch,) integer labels or (batch, classes) soft labels")
    if len(checks.shape_of(y)) == 1:
        checks.kind(y, int, name="y", where=where, what="class indices (batch,)")
    else:
        checks.kind(y, float, name="y", where=where, what="soft labels (batch, classes)")
        classifier = params.get(model.classifier) if isinstance(params, dict) else None
        if classifier is not None:
            classes = num_classes(model, params)
            checks.shape(y, (None, classes), name="y", where=where,
                         layout="(batch, classes)",
                         why=f"{model.name}'s classifier has {classes} classes")
    checks.same_size(x, 0, y, 0, names=("x", "y"), where=where,
                     what="the batch size (one label per image)")


def client_gradient(model: Model, params: Params, x: jax.Array, y: jax.Array,
                    randomness: ClientRandomness, stack: DefenseStack = NO_DEFENSE):
    """The batch's gradient in the cheapest form the stack's defense chain accepts.

    Without DP: the gradient of the batch's mean loss. With DP: the per-example
    gradients (:class:`~jgi.defenses.dp.PerExample`) for a single example, the
    already clipped sum (:class:`~jgi.defenses.dp.ClippedSum`, from
    :func:`clipped_gradient_sum`) for a larger batch.

    Raises:
      ValueError, TypeError: a wrong ``x`` or ``y`` (:func:`check_batch`).
    """
    check_batch(model, params, x, y, where="client_gradient")
    if stack.dp is None:
        return jax.grad(lambda p: client_loss(model, p, x, y, randomness.model))(params)
    if x.shape[0] == 1:  # one example (every victim update): clip it directly
        return dp_lib.PerExample(per_example_gradients(model, params, x, y, randomness.model))
    return dp_lib.ClippedSum(clipped_gradient_sum(model, params, x, y, randomness.model,
                                                  stack.dp.clip_norm), x.shape[0])


def client_update(model: Model, params: Params, x: jax.Array, y: jax.Array,
                  randomness: ClientRandomness | Noise | None = None,
                  stack: DefenseStack = NO_DEFENSE) -> Params:
    """The update a client shares after one local step: its gradient, defended.

    The gradient (:func:`client_gradient`) goes through the stack's defense chain
    (:func:`jgi.defenses.gradient_transform`: clip -> noise -> mean -> prune).

    Args:
      model: the model the federation trains (model-level defenses built in).
      params: the global parameters the client received.
      x: the client's batch (B, H, W, C), normalised as the model expects.
      y: labels, int (B,) or soft (B, classes).
      randomness: a :class:`ClientRandomness` (a bare noise dict is accepted for
        models without DP; None means no randomness).
      stack: the gradient-level defenses (DP, pruning); model-level ones must match
        the model.

    Returns:
      The shared update, with the structure of ``params``.

    Raises:
      ValueError, TypeError: a wrong ``x`` or ``y`` (:func:`check_batch`: rank, dtype,
        batch sizes), naming the argument and both shapes.
    """
    check_batch(model, params, x, y, where="client_update")
    if not isinstance(randomness, ClientRandomness):
        randomness = ClientRandomness(model={} if randomness is None else randomness)
    if stack.dp is not None and randomness.dp is None:
        raise ValueError("client_update: the stack uses DP-SGD but randomness.dp is None; "
                         "use sample_randomness(...) or supply the noise.")
    tx = gradient_transform(stack)
    update, _ = tx.update(client_gradient(model, params, x, y, randomness, stack),
                          tx.init(params), params, noise=randomness.dp)
    return update


def victim_updates(model: Model, params: Params, x: jax.Array, y: jax.Array,
                   randomness: ClientRandomness | Noise | None = None,
                   stack: DefenseStack = NO_DEFENSE) -> Params:
    """Every victim's update at once: one image per client step, vmapped over victims.

    Args:
      model: the model.
      params: shared parameters.
      x: victim images (V, H, W, C), normalised.
      y: victim labels (V,) or soft labels (V, classes).
      randomness: per-victim randomness, every leaf with a leading V axis (model noise
        with batch size 1 per victim: leaves of shape (V, 1, ...)); ``{}`` if none.
      stack: gradient-level defenses.

    Returns:
      Updates with a leading victim axis on every leaf.
    """
    if not isinstance(randomness, ClientRandomness):
        randomness = ClientRandomness(model={} if randomness is None else randomness)

    def one(xi, yi, ri):
        return client_update(model, params, xi[None], yi[None], ri, stack)

    return jax.vmap(one)(x, y, randomness)


def sample_victim_randomness(key: jax.Array, model: Model, params: Params,
                             stack: DefenseStack, input_shape: tuple[int, ...],
                             num_victims: int) -> ClientRandomness:
    """Independent randomness for each victim's batch-size-1 update (leading V axis)."""
    keys = jax.random.split(key, num_victims)
    return jax.vmap(lambda k: sample_randomness(k, model, params, stack, input_shape, 1))(keys)


def one_hot(y: jax.Array, num_classes: int) -> jax.Array:
    return jax.nn.one_hot(y, num_classes, dtype=jnp.float32)


def num_classes(model: Model, params: Params) -> int:
    """The model's number of classes: the last axis of its classifier's parameters."""
    return jax.tree.leaves(params[model.classifier])[0].shape[-1]
