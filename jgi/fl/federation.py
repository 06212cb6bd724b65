"""A federation as the FedAvg leakage study runs it, with a server-side attack hook.

Zhu, Huang, Xie, "Privacy attack in federated learning is not easy: an experimental
study" (2024; "NotEasy"), sections IV-A and IV-C, on McMahan et al.'s FedAvg (AISTATS
2017): 10 or 100 clients hold an IID or Dirichlet(beta) share of the training set
(:func:`jgi.fl.split.iid_shares`, :func:`jgi.fl.split.dirichlet_split`) with 20% held out
as each client's test set; every round the participating clients run E local epochs of
minibatch SGD (batch B, learning rate ``lr * 0.95 ** round``, momentum, weight decay)
from the global parameters ``W_t`` and send ``W_t - W_k``; the server attacks a chosen
client's update, then averages the updates weighted by the clients' sample counts:
``W_{t+1} = W_t - sum_k n_k / (sum_j n_j) (W_t - W_k)``.

Every client's local training is :func:`jgi.fl.local.make_local_training` with the
federation's :class:`~jgi.fl.local.LocalTraining`, the function
:func:`jgi.fl.observe` runs, so the :class:`~jgi.fl.observation.Observation` handed to
the hook is exactly the update that enters the average, and an attacker who simulates
``observation.local`` at ``observation.round`` simulates the client's real training.

The attack hook is a callback, ``attack(round, client_index, observation,
client_data) -> output``, called for each client of ``FederationConfig.attack_clients``
that takes part in the round, after local training and before averaging;
``client_data`` is ``(x, y)``, the examples the client trained on (augmented, when the
federation augments), for scoring. The outputs are collected in
:attr:`FederationResult.attacks`. ``jgi.fl`` never imports ``jgi.attacks``: the caller
closes the attack over whatever it needs.

Choices where the study is silent, stated so results can be compared:

- Clients of unequal sizes (a Dirichlet split gives them) are trained exactly: each
  runs ``ceil(n_k / B)`` steps per epoch on its own ``n_k`` examples, the last batch
  smaller, as :class:`~jgi.fl.local.LocalTraining` defines it. Clients are *grouped by
  size*: one compiled local training per distinct ``n_k``, ``vmap``-ed over the clients
  of that size (an IID split has at most two sizes, so it runs as one or two vmaps, as
  :mod:`jgi.fl.fedavg` does). Padding to a common size with masks would change the
  number and sizes of the steps, or need a masked loss that is not the client update
  the attacks invert. The round index (the learning-rate decay) enters the compiled
  function as an argument, so one compilation per size serves every round; a Dirichlet
  split of 100 clients compiles up to 100 local trainings once.
- Every client starts each round with a fresh optimiser state (momentum buffer zero):
  a client keeps nothing between rounds, and the attacker's simulation starts from the
  same zero state.
- Participation: each round ``max(1, round(participation * K))`` clients are drawn
  without replacement (all of them at ``participation=1``, the study's setting).
- Augmentation (the study's accuracy runs; off in its attack runs): random crop with
  4-pixel zero padding (zero in the model's input space) and horizontal flip with
  probability 1/2, drawn per example once per round, so the E local epochs of a round
  see the same augmented copy (torchvision would draw per epoch).
- Randomness: round r's key splits into (participants, training, augmentation) keys;
  client k trains with ``fold_in(training key, k)`` and augments with
  ``fold_in(augmentation key, k)``, so a run is a function of its seed, whichever clients
  take part and whether or not it resumed.
- Evaluation after every ``eval_every`` rounds (and the last): accuracy and loss of the
  global model on the test set, on each client's held-out set, and on all held-out sets
  together (every held-out example counted once); deterministic (dropout as identity,
  bottleneck at its mean, as in :func:`jgi.fl.fedavg.evaluate`).
- Resuming: with a checkpoint (:func:`federation_checkpoint`), the global
  parameters, the key and the metric history are saved between rounds and restored;
  a resumed run gives the same parameters as an uninterrupted one. The attack outputs
  of the rounds before a restore are not in the checkpoint: a caller that needs them
  writes them out from the hook (rows), and the hook is called again only for the rounds
  that are run again.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgi.checkpointing import PeriodicCheckpoint
from jgi.defenses.stack import NO_DEFENSE, DefenseStack
from jgi.fl.client import cross_entropy
from jgi.fl.fedavg import inference_noise
from jgi.fl.local import LocalTraining, make_local_training
from jgi.fl.observation import Observation
from jgi.fl.split import ClientShares
from jgi.models.interface import Model, Params

STUDY_ACCURACY_LOCAL = LocalTraining(epochs=2, batch_size=50, optimizer="sgd", lr=0.1,
                                     lr_decay=0.95, momentum=0.5, weight_decay=1e-5)
"""Local training of the study's accuracy runs (Fig. 48): 2 epochs, batch 50, SGD lr 0.1
decayed x0.95 per round, momentum 0.5, weight decay 1e-5."""

STUDY_ATTACK_LOCAL = dataclasses.replace(STUDY_ACCURACY_LOCAL, epochs=1, batch_size=10,
                                         momentum=0.0)
"""Local training of the study's attack runs: momentum 0, batch 10 (or 50), 1 epoch (or
2, 5); the other settings as in the accuracy runs."""

AttackHook = Callable[[int, int, Observation, tuple[np.ndarray, np.ndarray]], Any]


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """How the federation trains (defaults: the study's accuracy runs, Fig. 48).

    Attributes:
      rounds: communication rounds (the study: 100).
      local: every client's local training (:data:`STUDY_ACCURACY_LOCAL`).
      participation: fraction of the clients drawn each round (1: all, the study).
      attack_clients: the clients whose observations the hook receives, when they take
        part in a round.
      augment: random crop (4-pixel padding) and horizontal flip, once per round per
        example (the study's accuracy runs).
      eval_every: evaluate every this many rounds (and after the last).
      eval_batch_size: batch size of evaluation passes.
      client_batch: how many clients of one size train at once under ``vmap`` (None:
        all). 1 trains them one after another without ``vmap``: faster on CPU for
        models with ``lax`` convolutions (a ``vmap`` over per-client kernels becomes a
        grouped convolution); a lone client of its size always runs that way. The
        results are the same up to float reassociation.
    """

    rounds: int = 100
    local: LocalTraining = STUDY_ACCURACY_LOCAL
    participation: float = 1.0
    attack_clients: tuple[int, ...] = (0,)
    augment: bool = False
    eval_every: int = 1
    eval_batch_size: int = 500
    client_batch: int | None = None

    def __post_init__(self):
        if self.client_batch is not None and self.client_batch < 1:
            raise ValueError(f"FederationConfig.client_batch must be >= 1 or None (all "
                             f"clients of a size at once), got {self.client_batch}.")
        for name in ("rounds", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"FederationConfig.{name} must be >= 1, got "
                                 f"{getattr(self, name)}.")
        if not 0.0 < self.participation <= 1.0:
            raise ValueError(f"FederationConfig.participation is the fraction of clients per "
                             f"round, in (0, 1]; got {self.participation}.")
        if self.local.shares != "weight_delta":
            raise ValueError("A federation's clients share their weight change W_t - W_k: "
                             "use LocalTraining(shares='weight_delta').")
        if any(c < 0 for c in self.attack_clients):
            raise ValueError(f"attack_clients are client indices >= 0, got "
                             f"{self.attack_clients}.")

    def participants(self, num_clients: int) -> int:
        return max(1, int(round(self.participation * num_clients)))


class Clients(NamedTuple):
    """Each client's data, one array per client (sizes may differ), inputs normalised."""

    x_train: tuple[np.ndarray, ...]
    y_train: tuple[np.ndarray, ...]
    x_test: tuple[np.ndarray, ...]
    y_test: tuple[np.ndarray, ...]

    @property
    def num_clients(self) -> int:
        return len(self.y_train)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(y) for y in self.y_train])


def clients_from_shares(x: np.ndarray, y: np.ndarray, shares: ClientShares) -> Clients:
    """Gathers each client's training and held-out examples from the training set."""
    x, y = np.asarray(x), np.asarray(y)
    return Clients(tuple(x[i] for i in shares.train_idx), tuple(y[i] for i in shares.train_idx),
                   tuple(x[i] for i in shares.test_idx), tuple(y[i] for i in shares.test_idx))


class FederationState(NamedTuple):
    """What a round needs; a pytree of arrays (checkpointable)."""

    params: Params
    key_data: jax.Array  # raw PRNG key data for the next round
    round: jax.Array  # rounds done


class AttackRecord(NamedTuple):
    """One call of the attack hook: round (0-based), client index, the hook's output."""

    round: int
    client: int
    output: Any


class FederationResult(NamedTuple):
    """Outcome of a federation run.

    Attributes:
      params: the global parameters after the last round.
      history: per evaluated round: ``round`` (1-based, rounds done), ``train_loss``
        (mean over participants of their mean local loss), ``test_accuracy``,
        ``test_loss``, ``heldout_accuracy`` (all clients' held-out sets together),
        ``client_accuracy`` (one list per client's held-out set).
      attacks: every hook call of this process, in order.
      rounds: rounds done.
      wall_seconds: time of the whole run.
      samples_per_second: local training examples per second (compilation excluded
        where more than one round ran).
    """

    params: Params
    history: dict[str, list]
    attacks: list[AttackRecord]
    rounds: int
    wall_seconds: float
    samples_per_second: float


def random_crop_flip(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """Per example: a random ``H x W`` crop of the zero-padded image, flipped w.p. 1/2."""
    n, h, w, _ = x.shape
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (n, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (n,))
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(img, off, flip):
        crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
        return jnp.where(flip, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, flips)


@functools.lru_cache(maxsize=256)
def _group_training(model: Model, stack: DefenseStack, local: LocalTraining,
                    input_shape: tuple[int, ...], num_samples: int, augment: bool,
                    client_batch: int | None = None):
    """Jitted ``(params, x, y, train_keys, aug_keys, round) -> (deltas, losses)``.

    Over clients holding ``num_samples`` examples each (leading axis of ``x``): each runs
    :func:`jgi.fl.local.make_local_training` from ``params`` with a fresh optimiser
    state at the traced ``round`` (its learning rate), and returns ``W_t - W_k``.
    ``client_batch`` clients at a time (``vmap``; None: all); one client at a time runs
    without ``vmap`` (``lax.map``), which on CPU avoids the grouped convolutions that a
    ``vmap`` over per-client kernels becomes (lax convolutions ran at 3 examples per
    second that way against 80 unbatched, study CNN, 2 shared CPU cores).
    """
    def one(params, x, y, k_train, k_aug, round_index):
        if augment:
            x = random_crop_flip(k_aug, x)
        train = make_local_training(model, stack, local, input_shape, num_samples, round_index)
        opt_state = local.optimizer_for(round_index).init(params)
        new_params, _, loss = train(params, opt_state, x, y, k_train)
        return jax.tree.map(jnp.subtract, params, new_params), loss

    def run(params, x, y, k_train, k_aug, round_index):
        def each(args):
            return one(params, *args, round_index)

        clients = (x, y, k_train, k_aug)
        if x.shape[0] == 1 or client_batch == 1:
            return jax.lax.map(each, clients)
        if client_batch is None or client_batch >= x.shape[0]:
            return jax.vmap(one, in_axes=(None, 0, 0, 0, 0, None))(params, *clients,
                                                                    round_index)
        return jax.lax.map(each, clients, batch_size=client_batch)

    return jax.jit(run)


_augment = jax.jit(random_crop_flip)


def _client_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Round key -> (participants key, training key, augmentation key)."""
    k_sample, k_train, k_aug = jax.random.split(key, 3)
    return k_sample, k_train, k_aug


def client_round_keys(key: jax.Array, client: int) -> tuple[jax.Array, jax.Array]:
    """Client ``client``'s (training, augmentation) keys in the round with key ``key``."""
    _, k_train, k_aug = _client_keys(key)
    return jax.random.fold_in(k_train, client), jax.random.fold_in(k_aug, client)


def sample_participants(key: jax.Array, num_clients: int, config: FederationConfig
                        ) -> np.ndarray:
    """The sorted indices of the clients taking part in the round with key ``key``."""
    m = config.participants(num_clients)
    if m >= num_clients:
        return np.arange(num_clients)
    k_sample, _, _ = _client_keys(key)
    return np.sort(np.asarray(jax.random.choice(k_sample, num_clients, (m,), replace=False)))


def run_round(model: Model, stack: DefenseStack, config: FederationConfig, clients: Clients,
              params: Params, round_index: int, key: jax.Array,
              attack: AttackHook | None = None) -> tuple[Params, float, list[AttackRecord]]:
    """One FedAvg round: local training, the attack hook, the weighted average.

    Args:
      model, stack: the model (model-level defenses built in) and the clients' defenses.
      config: :class:`FederationConfig`.
      clients: every client's data.
      params: the global parameters ``W_t``.
      round_index: 0-based round (decays the learning rate).
      key: the round's key (see the module docstring for how it is split).
      attack: the hook, or None.

    Returns:
      ``(W_{t+1}, mean local loss over participants, the hook's records)``.
    """
    participants = sample_participants(key, clients.num_clients, config)
    sizes = clients.sizes
    input_shape = tuple(clients.x_train[0].shape[1:])
    weights = sizes[participants] / sizes[participants].sum()
    weight_of = dict(zip(participants.tolist(), weights.tolist(), strict=True))
    keys = {int(c): client_round_keys(key, int(c)) for c in participants}
    total = jax.tree.map(jnp.zeros_like, params)
    losses, records = [], []
    targets = set(config.attack_clients)
    for n in sorted(set(sizes[participants].tolist())):
        group = [int(c) for c in participants if sizes[c] == n]
        fn = _group_training(model, stack, config.local, input_shape, n, config.augment,
                             config.client_batch)
        x = jnp.asarray(np.stack([clients.x_train[c] for c in group]))
        y = jnp.asarray(np.stack([clients.y_train[c] for c in group]))
        k_train = jnp.stack([keys[c][0] for c in group])
        k_aug = jnp.stack([keys[c][1] for c in group])
        deltas, group_losses = fn(params, x, y, k_train, k_aug, jnp.asarray(round_index))
        w = jnp.asarray([weight_of[c] for c in group], jnp.float32)
        total = jax.tree.map(lambda t, d, w=w: t + jnp.tensordot(w, d, axes=1), total, deltas)
        losses.extend(np.asarray(group_losses).tolist())
        if attack is None:
            continue
        for i, c in enumerate(group):
            if c not in targets:
                continue
            obs = Observation(update=jax.tree.map(lambda d, i=i: d[i], deltas), params=params,
                              local=config.local, num_samples=n, round=round_index)
            xc = _augment(keys[c][1], x[i]) if config.augment else x[i]
            records.append(AttackRecord(round_index, c, attack(round_index, c, obs,
                                                                (np.asarray(xc),
                                                                 np.asarray(y[i])))))
    new_params = jax.tree.map(jnp.subtract, params, total)
    return new_params, float(np.mean(losses)), records


@functools.lru_cache(maxsize=16)
def _example_metrics(model: Model):
    @jax.jit
    def metrics(params, xb, yb, noise):
        logits = model.apply(params, xb, noise)
        per_example = jax.vmap(lambda lg, t: cross_entropy(lg[None], t[None]))(logits, yb)
        return per_example, jnp.argmax(logits, -1) == yb
    return metrics


def example_metrics(model: Model, params: Params, x: np.ndarray, y: np.ndarray,
                    batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (loss, correct) of ``params`` on (x, y), deterministic.

    Every batch has ``batch_size`` rows (the last one padded), so evaluating sets of any
    size (the test set, the clients' held-out sets) compiles one program.
    """
    n = len(y)
    if n == 0:
        return np.zeros(0), np.zeros(0, bool)
    b = batch_size
    noise = inference_noise(model, tuple(x.shape[1:]), b)
    metrics = _example_metrics(model)
    losses, correct = [], []
    for start in range(0, n, b):
        xb, yb = np.asarray(x[start:start + b]), np.asarray(y[start:start + b])
        rows = len(yb)
        if rows < b:
            xb = np.concatenate([xb, np.zeros((b - rows, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(b - rows, yb.dtype)])
        loss, hit = metrics(params, xb, yb, noise)
        losses.append(np.asarray(loss)[:rows])
        correct.append(np.asarray(hit)[:rows])
    return np.concatenate(losses), np.concatenate(correct)


def evaluate(model: Model, params: Params, clients: Clients, x_test: np.ndarray,
             y_test: np.ndarray, batch_size: int = 500) -> dict[str, Any]:
    """Test accuracy and loss, each client's held-out accuracy, and all held-out together."""
    test_loss, test_hit = example_metrics(model, params, x_test, y_test, batch_size)
    held_x = np.concatenate(clients.x_test)
    held_y = np.concatenate(clients.y_test)
    _, held_hit = example_metrics(model, params, held_x, held_y, batch_size)
    bounds = np.cumsum([0] + [len(y) for y in clients.y_test])
    per_client = [float(held_hit[a:b].mean()) if b > a else float("nan")
                  for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return {"test_accuracy": float(test_hit.mean()), "test_loss": float(test_loss.mean()),
            "heldout_accuracy": float(held_hit.mean()) if len(held_hit) else float("nan"),
            "client_accuracy": per_client}


def federation_checkpoint(directory, every_seconds: float = 60.0) -> PeriodicCheckpoint:
    """Checkpoint of a federation's ``{"state", "history"}``, named by its round."""
    return PeriodicCheckpoint(directory, every_seconds,
                              step_of=lambda s: int(np.asarray(s["state"].round)))


HISTORY_SCALARS = ("round", "train_loss", "test_accuracy", "test_loss", "heldout_accuracy")


def _history_arrays(history: dict, rounds: int, num_clients: int) -> dict:
    """Fixed-size float64 arrays (NaN-padded to ``rounds``) for checkpoints."""
    out = {k: np.pad(np.asarray(history[k], np.float64), (0, rounds - len(history[k])),
                     constant_values=np.nan) for k in HISTORY_SCALARS}
    acc = np.full((rounds, num_clients), np.nan)
    if history["client_accuracy"]:
        acc[:len(history["client_accuracy"])] = np.asarray(history["client_accuracy"])
    out["client_accuracy"] = acc
    return out


def _history_lists(arrays: dict) -> dict:
    done = int(np.sum(~np.isnan(np.asarray(arrays["round"]))))
    out = {k: [float(v) for v in np.asarray(arrays[k])[:done]] for k in HISTORY_SCALARS}
    out["round"] = [int(r) for r in out["round"]]
    out["client_accuracy"] = [[float(v) for v in row]
                              for row in np.asarray(arrays["client_accuracy"])[:done]]
    return out


def train(model: Model, clients: Clients, x_test: np.ndarray, y_test: np.ndarray,
          key: jax.Array, config: FederationConfig = FederationConfig(),
          stack: DefenseStack = NO_DEFENSE, *, attack: AttackHook | None = None,
          checkpoint=None, on_round: Callable[[int, dict], None] | None = None,
          progress: bool | str = False) -> FederationResult:
    """Trains a randomly initialised global model with the study's FedAvg.

    Args:
      model: the model (with the stack's model-level defenses built in).
      clients: every client's data (:func:`clients_from_shares`).
      x_test, y_test: the test set (normalised).
      key: PRNG key: the initialisation and every round's randomness.
      config: :class:`FederationConfig`.
      stack: the clients' defenses (the study: none).
      attack: the server's hook, ``attack(round, client, observation, (x, y))``, called
        before averaging (see the module docstring).
      checkpoint: optional :func:`federation_checkpoint`; the run restores from it and
        saves between rounds when it is due.
      on_round: called after every round with (rounds done, metrics); the metrics hold
        ``train_loss`` and, on evaluated rounds, the evaluation's entries.
      progress: tqdm bar over rounds (a string is its description).

    Returns:
      :class:`FederationResult`.
    """
    start = time.perf_counter()
    if any(c >= clients.num_clients for c in config.attack_clients):
        raise ValueError(f"attack_clients {config.attack_clients} name clients beyond the "
                         f"{clients.num_clients} of this federation "
                         f"(0..{clients.num_clients - 1}).")
    input_shape = tuple(clients.x_train[0].shape[1:])
    k_init, k_rounds = jax.random.split(key)
    state = FederationState(params=model.init(k_init, input_shape),
                            key_data=jax.random.key_data(k_rounds), round=jnp.asarray(0))
    history = {k: [] for k in (*HISTORY_SCALARS, "client_accuracy")}
    if checkpoint is not None:
        restored = checkpoint.restore({"state": state, "history": _history_arrays(
            history, config.rounds, clients.num_clients)})
        # Host copies: restored arrays are committed to a device, and a committed input
        # would make every compiled local training compile again.
        state = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), restored["state"])
        history = _history_lists(restored["history"])
    bar = None
    if progress:
        from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
        bar = tqdm(total=config.rounds, initial=int(state.round), unit="round",
                   desc=progress if isinstance(progress, str) else "federation",
                   dynamic_ncols=True)
    records: list[AttackRecord] = []
    timed_samples, timed_seconds, first = 0, 0.0, True
    samples_per_round = config.local.epochs * int(np.sum(clients.sizes))  # at participation 1
    try:
        while int(state.round) < config.rounds:
            r = int(state.round)
            key, sub = jax.random.split(jax.random.wrap_key_data(state.key_data))
            t0 = time.perf_counter()
            params, train_loss, new_records = run_round(model, stack, config, clients,
                                                        state.params, r, sub, attack)
            jax.block_until_ready(params)
            if not first or r + 1 >= config.rounds:
                timed_seconds += time.perf_counter() - t0
                timed_samples += samples_per_round * config.participants(
                    clients.num_clients) // clients.num_clients
            first = False
            records.extend(new_records)
            state = FederationState(params=params, key_data=jax.random.key_data(key),
                                    round=state.round + 1)
            metrics = {"train_loss": train_loss}
            if (r + 1) % config.eval_every == 0 or r + 1 == config.rounds:
                metrics.update(evaluate(model, params, clients, x_test, y_test,
                                        config.eval_batch_size))
                history["round"].append(r + 1)
                for k in HISTORY_SCALARS[1:]:
                    history[k].append(metrics[k])
                history["client_accuracy"].append(metrics["client_accuracy"])
            if on_round is not None:
                on_round(r + 1, metrics)
            if bar is not None:
                if "test_accuracy" in metrics:
                    bar.set_postfix(acc=f"{metrics['test_accuracy']:.4f}", refresh=False)
                bar.update(1)
            if checkpoint is not None and checkpoint.due():
                checkpoint.save({"state": state, "history": _history_arrays(
                    history, config.rounds, clients.num_clients)})
    finally:
        if bar is not None:
            bar.close()
    return FederationResult(
        params=state.params, history=history, attacks=records, rounds=int(state.round),
        wall_seconds=time.perf_counter() - start,
        samples_per_second=timed_samples / timed_seconds if timed_seconds > 0 else float("nan"))


__all__ = ["AttackHook", "AttackRecord", "Clients", "FederationConfig", "FederationResult",
           "FederationState", "STUDY_ACCURACY_LOCAL", "STUDY_ATTACK_LOCAL",
           "client_round_keys", "clients_from_shares", "evaluate", "example_metrics",
           "federation_checkpoint",
           "random_crop_flip", "run_round", "sample_participants", "train"]
