"""A client's local training: E epochs of minibatch steps, every step defended.

One description, :class:`LocalTraining`, covers the threat models jgi attacks:

- one SGD step on one image (:data:`ONE_STEP`): the core paper's victim update, whose
  shared quantity is the defended gradient itself;
- FedAvg's real client update (McMahan et al. 2017): ``epochs`` passes over the
  client's ``n`` samples in ``ceil(n / batch_size)`` minibatch steps (or ``floor`` with
  ``drop_last``) of SGD (momentum, weight decay) or Adam, with a learning rate that may
  decay from round to round, after which the client shares its weight change
  ``W_t - W_k``.

Every step is :func:`jgi.fl.client_update` on the step's batch with the client's stack,
so the defenses act inside every local step as they do in the single-step case: fresh
dropout masks and bottleneck eps, DP-SGD per batch, pruning of each step's update,
and, for a stack with an input encoding (MixUp, InstaHide), the batch encoded with
partners from the client's own data before the step. The optimiser then turns the
defended update into the parameter change.

:func:`make_local_training` builds the jittable function; FedAvg
(:mod:`jgi.fl.fedavg`) vmaps it over clients and :func:`jgi.fl.observe` runs it for the
server's observation, so the two are one function.

Randomness (all from the ``key`` argument, reproducible): each epoch's key splits into
a permutation key and a step key; the step key splits into one key per full batch, and
the last incomplete batch (without ``drop_last``) takes ``fold_in(permutation key,
LAST_BATCH_STREAM)``.
Each step's key draws the step's model noise and DP noise
(:func:`jgi.fl.client.sample_randomness`) and, through ``fold_in(step key,
ENCODING_STREAM)``, its encoding.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jgi.defenses import input_encoding
from jgi.defenses.stack import DefenseStack
from jgi.fl.client import client_loss, client_update, num_classes, one_hot, sample_randomness
from jgi.models.interface import Model, Params

OptimizerName = Literal["sgd", "adam"]
SharedQuantity = Literal["gradient", "weight_delta"]
OPTIMIZERS = ("sgd", "adam")
SHARED = ("gradient", "weight_delta")
ENCODING_STREAM = 0x656E63  # fold_in index of a step's encoding key ("enc")
LAST_BATCH_STREAM = 1  # fold_in index (of the epoch's permutation key) of the last batch


@dataclasses.dataclass(frozen=True)
class LocalTraining:
    """The public facts of a client's local training (what the server knows of it).

    Attributes:
      epochs: local epochs E.
      batch_size: local batch size B; ``None`` means the client's whole data as one
        batch.
      optimizer: "sgd" (with ``momentum``, PyTorch-style coupled ``weight_decay``) or
        "adam" (``betas``, coupled ``weight_decay``).
      lr: learning rate of the first round.
      lr_decay: factor applied to the learning rate per round (round r uses
        ``lr * lr_decay ** r``).
      momentum: SGD momentum (0: none).
      weight_decay: L2 weight decay added to the update before the optimiser (0: none).
      betas: Adam's (b1, b2).
      drop_last: drop each epoch's last incomplete batch (``floor(n / B)`` steps)
        instead of taking it as a smaller step (``ceil(n / B)``).
      shares: what the client sends: "gradient" (its one step's defended gradient;
        only for a single full-batch step) or "weight_delta" (``W_t - W_k``).
    """

    epochs: int = 1
    batch_size: int | None = None
    optimizer: OptimizerName = "sgd"
    lr: float = 0.1
    lr_decay: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    drop_last: bool = False
    shares: SharedQuantity = "weight_delta"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"LocalTraining.optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}.")
        if self.shares not in SHARED:
            raise ValueError(f"LocalTraining.shares must be one of {', '.join(SHARED)}, got "
                             f"{self.shares!r}.")
        if self.epochs < 1:
            raise ValueError(f"LocalTraining.epochs must be >= 1, got {self.epochs}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"LocalTraining.batch_size must be >= 1 or None (the whole "
                             f"local data set), got {self.batch_size}.")
        if self.shares == "gradient" and self.epochs != 1:
            raise ValueError("A client that trains several epochs shares its weight change: "
                             "use shares='weight_delta' (or epochs=1 with one full batch).")
        for name in ("lr", "weight_decay", "momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"LocalTraining.{name} must be >= 0, got "
                                 f"{getattr(self, name)}.")

    def batch(self, num_samples: int) -> int:
        """The batch size for a client holding ``num_samples`` examples (a batch larger
        than the data is the whole data, unless ``drop_last`` drops it)."""
        if self.batch_size is None:
            return num_samples
        return self.batch_size if self.drop_last else min(self.batch_size, num_samples)

    def steps_per_epoch(self, num_samples: int) -> tuple[int, int]:
        """``(full batches, size of the last incomplete batch or 0)`` of one epoch."""
        b = self.batch(num_samples)
        full, rest = divmod(num_samples, b)
        return full, (0 if self.drop_last else rest)

    def num_steps(self, num_samples: int) -> int:
        full, rest = self.steps_per_epoch(num_samples)
        return self.epochs * (full + (rest > 0))

    def is_single_step(self, num_samples: int) -> bool:
        return self.num_steps(num_samples) == 1

    def learning_rate(self, round_index: int = 0) -> float:
        return self.lr * self.lr_decay ** round_index

    def optimizer_for(self, round_index: int = 0) -> optax.GradientTransformation:
        """The optax optimiser of round ``round_index`` (learning rate decayed)."""
        lr = self.learning_rate(round_index)
        if self.optimizer == "adam":
            opt = optax.adam(lr, b1=self.betas[0], b2=self.betas[1])
        else:
            opt = optax.sgd(lr, momentum=self.momentum or None)
        if self.weight_decay > 0:
            return optax.chain(optax.add_decayed_weights(self.weight_decay), opt)
        return opt


ONE_STEP = LocalTraining(epochs=1, batch_size=None, shares="gradient")
"""The core paper's victim update: one step on the client's batch, sharing the gradient."""


class Piece(NamedTuple):
    """A run of consecutive local steps inside one epoch (see :func:`local_pieces`).

    Attributes:
      epoch: the epoch (0-based).
      start: the first full batch of the run.
      length: number of steps.
      last: whether the run is the epoch's last incomplete batch (one step).
    """

    epoch: int
    start: int
    length: int
    last: bool = False


def local_pieces(local: LocalTraining, num_samples: int, steps: int) -> tuple[Piece, ...]:
    """A client's local training cut into runs of at most ``steps`` steps, in order.

    Running them one after another with :func:`make_local_piece` gives the same
    parameters as :func:`make_local_training` in one call; between two pieces a caller
    can check for a stop request and keep what is finished (FedAvg does).
    """
    if steps < 1:
        raise ValueError(f"A piece of local training must hold >= 1 step, got {steps}.")
    full, rest = local.steps_per_epoch(num_samples)
    pieces = []
    for epoch in range(local.epochs):
        pieces += [Piece(epoch, s, min(steps, full - s)) for s in range(0, full, steps)]
        if rest:
            pieces.append(Piece(epoch, full, 1, last=True))
    return tuple(pieces)


def _local_parts(model: Model, stack: DefenseStack, local: LocalTraining,
                 input_shape: tuple[int, ...], num_samples: int, round_index: int):
    """The pieces both forms of local training are made of: ``(step, schedule, labels)``.

    ``step(params, opt_state, x, y, idx, key)`` is one defended optimiser step on the
    batch ``x[idx]``; ``schedule(epoch_key) -> (batches, step keys, last batch, its
    key)`` is an epoch's order; ``labels(params, y)`` turns int labels into the one-hot
    labels an input encoding mixes (once per local training or piece).
    """
    full, rest = local.steps_per_epoch(num_samples)
    b = local.batch(num_samples)
    if full < 1:
        raise ValueError(f"A client holds {num_samples} training examples, fewer than one batch "
                         f"of {b}; lower the batch size or use more data.")
    tx = local.optimizer_for(round_index)
    input_shape = tuple(input_shape)
    encoding = stack.encoding

    def step(params, opt_state, x, y, idx, key):
        xb, yb = x[idx], y[idx]
        if encoding is not None:
            mixing = input_encoding.sample_mixing(
                jax.random.fold_in(key, ENCODING_STREAM), encoding, idx.shape[0],
                num_samples, input_shape)
            xb, yb = input_encoding.encode(xb, yb, x, y, mixing)  # y: soft labels (run)
        randomness = sample_randomness(key, model, params, stack, input_shape, idx.shape[0])
        loss = client_loss(model, params, xb, yb, randomness.model)
        update = client_update(model, params, xb, yb, randomness, stack)
        updates, opt_state = tx.update(update, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def schedule(key):
        k_perm, k_steps = jax.random.split(key)
        order = jax.random.permutation(k_perm, num_samples)
        return (order[: full * b].reshape(full, b), jax.random.split(k_steps, full),
                order[full * b:], jax.random.fold_in(k_perm, LAST_BATCH_STREAM))

    def labels(params, y):
        if encoding is not None and y.ndim == 1:  # mixing needs one-hot labels
            return one_hot(y, num_classes(model, params))
        return y

    return step, schedule, labels


def make_local_training(model: Model, stack: DefenseStack, local: LocalTraining,
                        input_shape: tuple[int, ...], num_samples: int, round_index: int = 0):
    """``(params, opt_state, x, y, key) -> (params, opt_state, mean loss)`` for one client.

    Args:
      model: the model, with the stack's model-level defenses built in.
      stack: the client's defenses (act inside every step).
      local: the local training.
      input_shape: (H, W, C) of one example.
      num_samples: the client's number of training examples (the leading axis of ``x``).
      round_index: the round (for the learning-rate decay).

    Returns:
      A jittable function; ``opt_state`` is ``local.optimizer_for(round_index).init``'s.
      ``x`` are the client's (normalised) examples, ``y`` int or soft labels. The mean
      loss is the mean over steps of each batch's training loss before its step.
    """
    step, schedule, labels = _local_parts(model, stack, local, input_shape, num_samples,
                                          round_index)
    _, rest = local.steps_per_epoch(num_samples)

    def epoch(carry, key):
        params, opt_state, x, y = carry
        batches, step_keys, last_idx, last_key = schedule(key)

        def scan_step(carry, inputs):
            params, opt_state = carry
            idx, k = inputs
            params, opt_state, loss = step(params, opt_state, x, y, idx, k)
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            scan_step, (params, opt_state), (batches, step_keys))
        if not rest:
            return (params, opt_state, x, y), jnp.mean(losses)
        params, opt_state, last = step(params, opt_state, x, y, last_idx, last_key)
        return (params, opt_state, x, y), (jnp.sum(losses) + last) / (losses.shape[0] + 1)

    def run(params: Params, opt_state, x, y, key):
        y = labels(params, y)  # once per local training, not in every step
        (params, opt_state, _, _), losses = jax.lax.scan(
            epoch, (params, opt_state, x, y), jax.random.split(key, local.epochs))
        return params, opt_state, jnp.mean(losses)

    return run


def make_local_piece(model: Model, stack: DefenseStack, local: LocalTraining,
                     input_shape: tuple[int, ...], num_samples: int, piece: Piece,
                     round_index: int = 0):
    """``(params, opt_state, x, y, key, epoch, start) -> (params, opt_state, loss sum)``.

    The steps of one :class:`Piece` of the local training that
    :func:`make_local_training` runs whole, with the same ``key`` (the client's key of
    the round) and the same randomness per step. ``epoch`` and ``start`` may be traced
    (one compilation serves every piece of the same length); the loss sum is over the
    piece's steps, each batch's loss before its step.
    """
    step, schedule, labels = _local_parts(model, stack, local, input_shape, num_samples,
                                          round_index)

    def run(params: Params, opt_state, x, y, key, epoch, start):
        y = labels(params, y)
        batches, step_keys, last_idx, last_key = schedule(
            jax.random.split(key, local.epochs)[epoch])
        if piece.last:
            params, opt_state, loss = step(params, opt_state, x, y, last_idx, last_key)
            return params, opt_state, loss
        idx = jax.lax.dynamic_slice_in_dim(batches, start, piece.length)
        keys = jax.lax.dynamic_slice_in_dim(step_keys, start, piece.length)

        def scan_step(carry, inputs):
            params, opt_state, total = carry
            params, opt_state, loss = step(params, opt_state, x, y, *inputs)
            return (params, opt_state, total + loss), None

        (params, opt_state, total), _ = jax.lax.scan(
            scan_step, (params, opt_state, jnp.zeros((), jnp.float32)), (idx, keys))
        return params, opt_state, total

    return run
