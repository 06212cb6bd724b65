"""Federated averaging for model utility, with every client defense applied in training.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data" (AISTATS 2017), in the setting of the core paper (Scheliga et al., "Combining
stochastic defenses ...", section 5.1): 10 IID clients train a randomly initialised
global model; each round every client runs one local epoch of Adam (lr 1e-3, betas
0.9/0.999, batch 64) from the global parameters, and the server averages the clients'
parameters weighted by their training-set sizes. Training stops after 300 rounds or
when the mean validation loss over clients has not improved for 40 rounds. The test
accuracy of the global model is computed after every round.

Every local step is the client update of :mod:`jgi.fl.client` with the client's stack
(the local training of :mod:`jgi.fl.local`, the same function the server's observations
of a multi-step client come from):
fresh dropout masks and bottleneck eps per step, DP-SGD per batch (per-example clipping,
noise, divided by the batch size), pruning of each step's update, in the order
GP(DP(grad)). Clients train in parallel: the local epoch is a ``lax.scan`` over batches,
``vmap``-ed over the client axis, so one round is one compiled call.

Choices where the paper is silent, stated so results can be compared:
- Adam state: each client keeps its own Adam moments across rounds (the authors'
  federated trainer stores each client's optimiser state with the client); the
  parameters are replaced by the global ones at the start of every round. Pass
  ``adam_state="reset"`` for fresh moments every round.
- Batches: every round reshuffles each client's data; the last incomplete batch is
  dropped (84 steps of 64 on a 5,400-image MNIST client), so every step is exactly the
  client update the attacks invert.
- Reported accuracy: the test accuracy of the global model at the round with the best
  mean validation loss (the early-stopping checkpoint); the final and the maximum
  accuracy and the whole curve are recorded too.
- Evaluation is deterministic: dropout acts as the identity (masks equal to 1 - p
  under inverted scaling) and the bottleneck passes its mean (eps = 0).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi.defenses.stack import NO_DEFENSE, DefenseStack
from jgi.fl.client import cross_entropy
from jgi.fl.local import (LocalTraining, Piece, local_pieces, make_local_piece,
                          make_local_training)
from jgi.fl.split import FederatedSplit
from jgi.models.interface import Model, Params

ADAM_STATES = ("persist", "reset")
PIECE_STEPS = 8  # local steps per piece of a round (train checks for a stop between)
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class FedAvgConfig:
    """FedAvg settings (defaults: the core paper's, section 5.1).

    Attributes:
      rounds: maximum communication rounds (300).
      local_epochs: local epochs per round (1).
      batch_size: local batch size (64).
      optimizer_name: "adam" (paper) or "sgd" (plain SGD, for tests and comparisons).
      lr, betas: local learning rate and Adam betas (1e-3; 0.9, 0.999).
      patience: stop when the mean validation loss has not improved for this many
        rounds (40).
      adam_state: "persist" (each client keeps its Adam moments across rounds) or
        "reset" (fresh every round).
      eval_batch_size: batch size of evaluation passes.
      client_batch: how many clients train at once (``None``: all, one ``vmap``).
        Fewer trade speed for memory through ``lax.map(..., batch_size=client_batch)``:
        DP-SGD's per-example gradients of ResNet-18 for 10 clients x 64 examples need
        about 28 GB at once, 2.8 GB per client. Clients are independent, so the
        results are the same up to float reassociation.
    """

    rounds: int = 300
    local_epochs: int = 1
    batch_size: int = 64
    optimizer_name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    patience: int = 40
    adam_state: str = "persist"
    eval_batch_size: int = 1000
    client_batch: int | None = None

    def __post_init__(self):
        if self.optimizer_name not in OPTIMIZERS:
            raise ValueError(f"optimizer_name must be one of {', '.join(OPTIMIZERS)}, got "
                             f"{self.optimizer_name!r}.")
        if self.adam_state not in ADAM_STATES:
            raise ValueError(f"adam_state must be one of {', '.join(ADAM_STATES)}, got "
                             f"{self.adam_state!r}.")
        if self.client_batch is not None and self.client_batch < 1:
            raise ValueError(f"FedAvgConfig.client_batch must be >= 1 or None (all clients "
                             f"at once), got {self.client_batch}.")
        for name in ("rounds", "local_epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"FedAvgConfig.{name} must be >= 1, got {getattr(self, name)}.")

    def local_training(self) -> LocalTraining:
        """Each client's local training in a round (the last incomplete batch dropped)."""
        return LocalTraining(epochs=self.local_epochs, batch_size=self.batch_size,
                             optimizer=self.optimizer_name, lr=self.lr, betas=self.betas,
                             drop_last=True, shares="weight_delta")

    def optimizer(self) -> optax.GradientTransformation:
        return self.local_training().optimizer_for(0)


class ClientData(NamedTuple):
    """Stacked client data: leading client axis, normalised images."""

    x_train: jax.Array  # (C, n_train, H, W, ch)
    y_train: jax.Array  # (C, n_train)
    x_val: jax.Array  # (C, n_val, H, W, ch)
    y_val: jax.Array  # (C, n_val)


def client_data(x: np.ndarray, y: np.ndarray, split: FederatedSplit) -> ClientData:
    """Gathers each client's training and validation data (inputs already normalised)."""
    return ClientData(jnp.asarray(x[split.train_idx]), jnp.asarray(y[split.train_idx]),
                      jnp.asarray(x[split.val_idx]), jnp.asarray(y[split.val_idx]))


class FedAvgState(NamedTuple):
    """Everything a run needs, between two pieces of a round; a pytree of arrays
    (checkpointable).

    A round is cut into pieces of local steps (:func:`jgi.fl.local.local_pieces`);
    ``piece`` counts those finished in the running round, whose clients' parameters so
    far are ``client_params``. ``piece == 0`` is a round boundary.
    """

    params: Params  # global parameters
    opt_state: Any  # per-client Adam state (leading client axis)
    key_data: jax.Array  # raw PRNG key data for the next round
    round: jax.Array
    best_val_loss: jax.Array
    rounds_since_best: jax.Array
    best_params: Params
    piece: jax.Array  # pieces of the running round already done
    round_key_data: jax.Array  # raw key data of the running round
    client_params: Params  # per-client parameters within the running round
    loss_sums: jax.Array  # (clients, epochs): each epoch's summed step losses so far


class FedAvgResult(NamedTuple):
    """Outcome of a training run.

    Attributes:
      accuracy: test accuracy at the round with the best mean validation loss.
      final_accuracy, max_accuracy: at the last round, and the best of all rounds.
      best_round: 1-based round of the best validation loss.
      rounds: rounds run.
      history: per round: mean train loss, mean validation loss, test accuracy.
      stopped_early: whether the patience rule ended training.
      params: the global parameters of the best round.
      wall_seconds: time of the whole run.
      samples_per_second: training examples processed per second (all clients).
    """

    accuracy: float
    final_accuracy: float
    max_accuracy: float
    best_round: int
    rounds: int
    history: dict[str, list[float]]
    stopped_early: bool
    params: Params
    wall_seconds: float
    samples_per_second: float


def inference_noise(model: Model, input_shape: tuple[int, ...], batch: int) -> Any:
    """Deterministic noise for evaluation: dropout as identity, bottleneck at its mean."""
    sample = model.sample_noise(jax.random.key(0), tuple(input_shape), batch)
    noise = {}
    if "dropout" in sample:
        noise["dropout"] = jax.tree.map(lambda m: jnp.full_like(m, 1.0 - model.dropout),
                                        sample["dropout"])
    if "eps" in sample:
        noise["eps"] = jnp.zeros_like(sample["eps"])
    return noise


def client_opt_states(config: FedAvgConfig, params: Params, num_clients: int) -> Any:
    """Fresh optimiser state for every client, stacked on a leading client axis."""
    tx = config.optimizer()
    return jax.vmap(lambda _: tx.init(params))(jnp.arange(num_clients))


def make_round(model: Model, stack: DefenseStack, config: FedAvgConfig,
               input_shape: tuple[int, ...], n_train: int, num_clients: int):
    """``(params, opt_state, x_train, y_train, key) -> (params, opt_state, mean loss)``.

    One FedAvg round: every client's local training
    (:func:`jgi.fl.local.make_local_training`, the function the server's observations
    come from),
    ``vmap``-ed over the leading client axis of ``opt_state``, ``x_train`` and
    ``y_train`` (``config.client_batch`` clients at a time when set), then the average of
    the clients' parameters (equal client sizes).
    """
    local = make_local_training(model, stack, config.local_training(), input_shape, n_train)
    weights = jnp.full((num_clients,), 1.0 / num_clients)

    def round_fn(params, opt_state, x_train, y_train, key):
        keys = jax.random.split(key, num_clients)
        if config.adam_state == "reset":
            opt_state = client_opt_states(config, params, num_clients)
        if config.client_batch is None or config.client_batch >= num_clients:
            client_params, opt_state, losses = jax.vmap(local, in_axes=(None, 0, 0, 0, 0))(
                params, opt_state, x_train, y_train, keys)
        else:
            client_params, opt_state, losses = jax.lax.map(
                lambda c: local(params, *c), (opt_state, x_train, y_train, keys),
                batch_size=config.client_batch)
        new_params = jax.tree.map(lambda p: jnp.tensordot(weights, p, axes=1), client_params)
        return new_params, opt_state, jnp.mean(losses)

    return round_fn


def _stacked(params: Params, num_clients: int) -> Params:
    """``params`` repeated on a leading client axis."""
    return jax.tree.map(lambda p: jnp.broadcast_to(p, (num_clients,) + p.shape), params)


def make_pieces(model: Model, stack: DefenseStack, config: FedAvgConfig,
                input_shape: tuple[int, ...], n_train: int, num_clients: int,
                pieces: tuple[Piece, ...]):
    """``(index, client_params, opt_state, x_train, y_train, round_key) -> (client_params,
    opt_state, loss sums)``: piece ``index`` of a round for every client.

    The round of :func:`make_round` cut into ``pieces``
    (:func:`jgi.fl.local.local_pieces`), each one compiled call ``vmap``-ed over the
    client axis (``config.client_batch`` clients at a time when set) with the clients'
    keys of the round as :func:`make_round` splits them; pieces of the same length share
    one compilation. The loss sums are per client, over the piece's steps.
    """
    local = config.local_training()
    compiled = {}

    def build(piece: Piece):
        one = make_local_piece(model, stack, local, input_shape, n_train, piece)

        def run(client_params, opt_state, x_train, y_train, key, epoch, start):
            keys = jax.random.split(key, num_clients)
            if config.client_batch is None or config.client_batch >= num_clients:
                return jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None, None))(
                    client_params, opt_state, x_train, y_train, keys, epoch, start)
            return jax.lax.map(lambda c: one(*c, epoch, start),
                               (client_params, opt_state, x_train, y_train, keys),
                               batch_size=config.client_batch)

        return jax.jit(run)

    def run_piece(index, client_params, opt_state, x_train, y_train, key):
        piece = pieces[index]
        shape = (piece.length, piece.last)
        if shape not in compiled:
            compiled[shape] = build(piece)
        return compiled[shape](client_params, opt_state, x_train, y_train, key,
                               jnp.asarray(piece.epoch), jnp.asarray(piece.start))

    return run_piece


@functools.lru_cache(maxsize=16)
def _batch_metrics(model: Model):
    """One compiled (summed loss, correct count) per model, reused by every evaluation.

    A fresh ``jax.jit`` per call recompiled the forward pass each round (about 1 s per
    call on 2 CPU cores, 11 calls a round: two thirds of a 20-round MNIST run).
    """
    @jax.jit
    def metrics(params, xb, yb, noise):
        logits = model.apply(params, xb, noise)
        return (cross_entropy(logits, yb) * yb.shape[0],
                jnp.sum(jnp.argmax(logits, -1) == yb))
    return metrics


def evaluate(model: Model, params: Params, x: jax.Array, y: jax.Array,
             batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``params`` on (x, y), deterministic."""
    total_loss, correct = 0.0, 0
    noise_cache = {}
    metrics = _batch_metrics(model)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        n = len(yb)
        if n not in noise_cache:
            noise_cache[n] = inference_noise(model, xb.shape[1:], n)
        loss_sum, hits = metrics(params, xb, yb, noise_cache[n])
        total_loss += float(loss_sum)
        correct += int(hits)
    return total_loss / len(y), correct / len(y)


def train(model: Model, stack: DefenseStack, data: ClientData, x_test: jax.Array,
          y_test: jax.Array, key: jax.Array, config: FedAvgConfig = FedAvgConfig(), *,
          progress: bool | str = True, checkpoint=None,
          on_round: Callable[[int, dict], None] | None = None,
          on_piece: Callable[[int, int], None] | None = None,
          piece_steps: int = PIECE_STEPS) -> FedAvgResult:
    """Trains a randomly initialised global model with FedAvg.

    Args:
      model: the model, with the stack's model-level defenses built in.
      stack: the clients' defense stack (the same for every client).
      data: stacked client data (:func:`client_data`).
      x_test, y_test: the test set (normalised).
      key: PRNG key: initialisation, shuffling, and every client's randomness.
      config: :class:`FedAvgConfig`.
      progress: tqdm bar over rounds (a string is its description).
      checkpoint: optional :func:`jgi.checkpointing.fedavg_checkpoint`; the state is
        restored from it, saved between pieces of a round when due, and saved at once
        when the run is interrupted (KeyboardInterrupt, which is re-raised).
      on_round: called after every round with (round, metrics).
      on_piece: called after every piece with (round, pieces done in it).
      piece_steps: local steps per piece: every client's local training runs in pieces
        of this many steps, between which the run checks for a stop request and may
        save; the result does not depend on it.

    Returns:
      :class:`FedAvgResult`.
    """
    start = time.perf_counter()
    num_clients, n_train = data.y_train.shape[:2]
    input_shape = tuple(data.x_train.shape[2:])
    local = config.local_training()
    pieces = local_pieces(local, n_train, piece_steps)
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, input_shape)
    opt_state = client_opt_states(config, params, num_clients)
    clients = _stacked(params, num_clients)
    state = FedAvgState(params=params, opt_state=opt_state,
                        key_data=jax.random.key_data(k_train), round=jnp.asarray(0),
                        best_val_loss=jnp.asarray(jnp.inf, jnp.float32),
                        rounds_since_best=jnp.asarray(0), best_params=params,
                        piece=jnp.asarray(0), round_key_data=jax.random.key_data(k_train),
                        client_params=clients,
                        loss_sums=jnp.zeros((num_clients, local.epochs), jnp.float32))
    history = {"train_loss": [], "val_loss": [], "test_accuracy": []}
    if checkpoint is not None:
        restored = checkpoint.restore({"state": state, "history": _history_arrays(history,
                                                                                 config)})
        state = restored["state"]
        history = _history_lists(restored["history"], int(state.round))

    run_piece = make_pieces(model, stack, config, input_shape, n_train, num_clients, pieces)
    steps_per_epoch = sum(p.length for p in pieces if p.epoch == 0)
    weights = jnp.full((num_clients,), 1.0 / num_clients)
    average = jax.jit(lambda c: jax.tree.map(lambda p: jnp.tensordot(weights, p, axes=1), c))

    bar = None
    if progress:
        from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
        bar = tqdm(total=config.rounds, initial=int(state.round), unit="round",
                   desc=progress if isinstance(progress, str) else "fedavg", dynamic_ncols=True)
    stopped_early = False
    trained_rounds = timed_rounds = 0
    train_seconds = 0.0

    def save():
        checkpoint.save({"state": state, "history": _history_arrays(history, config)})

    try:
        while int(state.round) < config.rounds:
            if int(state.piece) == 0:
                if int(state.rounds_since_best) >= config.patience:
                    stopped_early = True
                    break
                next_key, sub = jax.random.split(jax.random.wrap_key_data(state.key_data))
                opt = (client_opt_states(config, state.params, num_clients)
                       if config.adam_state == "reset" else state.opt_state)
                state = state._replace(
                    key_data=jax.random.key_data(next_key),
                    round_key_data=jax.random.key_data(sub), opt_state=opt,
                    client_params=_stacked(state.params, num_clients),
                    loss_sums=jnp.zeros_like(state.loss_sums))
            t0 = time.perf_counter()
            round_key = jax.random.wrap_key_data(state.round_key_data)
            for index in range(int(state.piece), len(pieces)):
                client_params, opt_state, loss = run_piece(
                    index, state.client_params, state.opt_state, data.x_train, data.y_train,
                    round_key)
                jax.block_until_ready(client_params)
                epoch = pieces[index].epoch
                state = state._replace(
                    client_params=client_params, opt_state=opt_state,
                    loss_sums=state.loss_sums.at[:, epoch].add(loss),
                    piece=jnp.asarray(index + 1))
                if on_piece is not None:
                    on_piece(int(state.round), index + 1)
                if checkpoint is not None and checkpoint.due():
                    save()
            params = average(state.client_params)
            train_loss = jnp.mean(state.loss_sums / steps_per_epoch)
            jax.block_until_ready(params)
            if trained_rounds > 0 or int(state.round) + 1 >= config.rounds:
                # The first round of a process includes compilation; it is left out of
                # the throughput unless it is the only one.
                train_seconds += time.perf_counter() - t0
                timed_rounds += 1
            trained_rounds += 1
            val_losses = [evaluate(model, params, data.x_val[c], data.y_val[c],
                                   config.eval_batch_size)[0] for c in range(num_clients)]
            # Rounded to float32 as stored in the state, so an unchanged loss compares
            # equal to the best one whichever way float64 -> float32 rounding goes.
            val_loss = float(np.float32(np.mean(val_losses)))
            _, accuracy = evaluate(model, params, x_test, y_test, config.eval_batch_size)
            improved = val_loss < float(state.best_val_loss)
            history["train_loss"].append(float(train_loss))
            history["val_loss"].append(val_loss)
            history["test_accuracy"].append(accuracy)
            state = state._replace(
                params=params, round=state.round + 1, piece=jnp.asarray(0),
                best_val_loss=jnp.asarray(val_loss if improved else state.best_val_loss,
                                          jnp.float32),
                rounds_since_best=jnp.asarray(0 if improved else int(state.rounds_since_best) + 1),
                best_params=params if improved else state.best_params)
            metrics = {"train_loss": float(train_loss), "val_loss": val_loss,
                       "test_accuracy": accuracy}
            if on_round is not None:
                on_round(int(state.round), metrics)
            if bar is not None:
                bar.set_postfix(acc=f"{accuracy:.4f}", val=f"{val_loss:.4f}", refresh=False)
                bar.update(1)
            if checkpoint is not None and checkpoint.due():
                save()
        else:
            stopped_early = int(state.rounds_since_best) >= config.patience
    except KeyboardInterrupt:
        # Keep what is finished: the last whole piece (at most one piece is redone).
        if checkpoint is not None:
            save()
        raise
    finally:
        if bar is not None:
            bar.close()
    acc = history["test_accuracy"]
    if not acc:
        raise ValueError("FedAvg ran no round (rounds=0?).")
    best_round = int(np.argmin(history["val_loss"])) + 1
    steps_per_round = (n_train // config.batch_size) * config.batch_size * config.local_epochs
    return FedAvgResult(
        accuracy=acc[best_round - 1], final_accuracy=acc[-1], max_accuracy=max(acc),
        best_round=best_round, rounds=len(acc), history=history, stopped_early=stopped_early,
        params=state.best_params, wall_seconds=time.perf_counter() - start,
        samples_per_second=(timed_rounds * steps_per_round * num_clients / train_seconds
                            if train_seconds > 0 else float("nan")))


def _history_arrays(history: dict[str, list[float]], config: FedAvgConfig) -> dict:
    """Fixed-size float64 NumPy arrays (NaN-padded to ``config.rounds``) for checkpoints."""
    return {k: np.pad(np.asarray(v, np.float64), (0, config.rounds - len(v)),
                      constant_values=np.nan) for k, v in history.items()}


def _history_lists(arrays: dict, rounds: int) -> dict[str, list[float]]:
    return {k: [float(a) for a in np.asarray(v)[:rounds]] for k, v in arrays.items()}


__all__ = ["ADAM_STATES", "PIECE_STEPS", "ClientData", "FedAvgConfig", "FedAvgResult",
           "FedAvgState", "NO_DEFENSE", "client_data", "evaluate", "inference_noise", "train"]
