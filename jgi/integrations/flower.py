"""Attacks on a real Flower federation: what the server receives, as a jgi Observation.

A researcher auditing a Flower (flwr, https://flower.ai) deployment asks what the
server could reconstruct from what it *really* receives. This module gives the two
pieces of a Flower federation that jgi needs and the glue to run it locally:

- :class:`RecordingFedAvg`, a Flower ``FedAvg`` strategy that, before averaging,
  records every client's result as Flower delivered it (a :class:`ClientRecord`: the
  parameters as ndarrays, the client's Flower id and its self-reported partition,
  ``num_examples``, the round, the metrics, the fit config the server sent, and the
  global parameters of that round's ``configure_fit``). :func:`observation` turns one
  record into a :class:`jgi.fl.Observation` (``update = W_t - W_k``, the global
  parameters, the local training the server prescribed, ``num_samples``, the round), so
  every jgi attack runs on it: multi-step IG (:mod:`jgi.attacks.multistep`) on any
  update, IG / CDIA / the other targeted attacks (:mod:`jgi.attacks.mimic`) on a
  one-image one-step update read as its gradient (:func:`as_gradient`).
- :class:`JgiClient`, a Flower ``NumPyClient`` whose ``fit`` is jgi's own local
  training (:func:`jgi.fl.local.make_local_training`, every step defended by the
  client's :class:`~jgi.defenses.DefenseStack`: dropout, DP-SGD, pruning, PRECODE/CVB,
  input encodings), with the :class:`~jgi.fl.LocalTraining` the server sends in the
  fit config, and the client's key of the round :func:`client_key`.
- :func:`to_ndarrays` / :func:`from_ndarrays`: jgi parameter pytrees <-> Flower's list
  of ndarrays, in the fixed leaf order of ``jax.tree_util`` (dict keys sorted), every
  count, shape and dtype checked against a template, errors naming the leaf.
- :func:`run_federation`: a real local federation, bounded in time: one server process
  and client processes on 127.0.0.1, their logs and the records in a folder, every
  process stopped on return, on error and on timeout.

Transport, and why. Flower 1.42 offers three ways to run a federation. Used here: the
gRPC "bidi" server and clients (``flwr.server.start_server``,
``flwr.client.start_client``), deprecated since flwr 1.13 in favour of SuperLink and
SuperNode but working in 1.42.0 and needing no extra service: a server process and
client processes talking gRPC over the loopback interface, the strategy object (and so
the records) inside a process this module starts. The SuperLink/SuperNode processes
need a Flower App project (a ``pyproject.toml`` with ``[tool.flwr]``, started with
``flwr run``) and run the ServerApp in a further process loaded by module path; the
simulation engine needs Ray (``flwr[simulation]`` pins ``ray==2.55.1``), a heavy extra
and no real client processes. The strategy is a plain Flower ``Strategy`` and the client
a ``NumPyClient``, the pieces a ServerApp/ClientApp is built from when
``start_server``/``start_client`` are removed (not tried here).

Choices (Flower and the papers are silent):

- Rounds: Flower's are 1-based; jgi's ``round_index`` (the learning-rate decay, the
  observation's ``round``) is Flower's round minus one.
- The client's key of Flower round ``r`` is ``fold_in(fold_in(key(seed), partition),
  r - 1)`` (:func:`client_key`), so the server's observation can be recomputed by
  jgi's own :func:`jgi.fl.observe` for the same data and parameters (the test does).
- Clients return their new parameters (Flower's FedAvg averages parameters); the
  recorded update is ``W_t - W_k`` computed in float32 from the two arrays as delivered.
- One process may host several Flower clients (``client_processes`` < clients), each a
  thread with its own gRPC connection: the server sees the same clients, and the
  start-up (importing JAX, compiling the local training once) is paid once per process.
  The test uses one client process; the example one per client.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgi import defenses as defenses_lib
from jgi import models
from jgi.attacks import runner
from jgi.defenses.dp import DPConfig
from jgi.defenses.stack import PAPER_DP, PAPER_DROPOUT_RATE, PAPER_PRUNE_FRACTION, DefenseStack
from jgi.fl.local import LocalTraining, make_local_training
from jgi.fl.observation import Observation
from jgi.models.interface import Model, Params

try:  # optional extra: pip install "jgi[flower]"
    import flwr
    from flwr.client import NumPyClient as _NumPyClient
    from flwr.server.strategy import FedAvg as _FedAvg
except ImportError as _error:  # pragma: no cover - exercised where flwr is absent
    flwr = None
    _FLWR_ERROR: ImportError | None = _error
    _NumPyClient = object
    _FedAvg = object
else:
    _FLWR_ERROR = None

TESTED_FLWR = "1.42.0"
PARTITION_METRIC = "jgi_partition"  # the client's partition, in its fit metrics
LOCAL_CONFIG = "jgi_local"  # the server's LocalTraining (JSON), in the fit config
ROUND_CONFIG = "jgi_round"  # Flower's 1-based round, in the fit config


def require_flwr() -> None:
    """Raises an ImportError saying what to install when flwr is missing."""
    if flwr is None:
        raise ImportError(
            f"jgi.integrations.flower needs Flower: pip install 'jgi[flower]' (flwr=="
            f"{TESTED_FLWR}, the version it is tested with). Import failed with: "
            f"{_FLWR_ERROR}")


# --------------------------------------------------------------------------- params


def leaf_names(template: Params) -> list[str]:
    """The leaves of a parameter pytree in Flower's order, as readable paths."""
    paths, _ = jax.tree_util.tree_flatten_with_path(template)
    return [jax.tree_util.keystr(path) for path, _ in paths]


def to_ndarrays(params: Params) -> list[np.ndarray]:
    """A jgi parameter pytree as Flower's list of ndarrays (``jax.tree_util`` leaf order,
    dict keys sorted; float32 kept as it is)."""
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]


def from_ndarrays(arrays: Sequence[np.ndarray], template: Params) -> Params:
    """Flower's list of ndarrays back into the structure of ``template``.

    Args:
      arrays: as :func:`to_ndarrays` wrote them (e.g. ``parameters_to_ndarrays`` of a
        Flower ``Parameters``).
      template: parameters (or ``jax.ShapeDtypeStruct``s) of the model.

    Raises:
      ValueError: the number of arrays, or a leaf's shape or dtype, differs from the
        template's; the message names the leaf and both shapes/dtypes.
    """
    leaves, treedef = jax.tree_util.tree_flatten(template)
    names = leaf_names(template)
    arrays = list(arrays)
    if len(arrays) != len(leaves):
        raise ValueError(f"from_ndarrays: got {len(arrays)} arrays, the model has "
                         f"{len(leaves)} parameter leaves ({', '.join(names)}).")
    out = []
    for name, array, leaf in zip(names, arrays, leaves, strict=True):
        array = np.asarray(array)
        if tuple(array.shape) != tuple(leaf.shape):
            raise ValueError(f"from_ndarrays: leaf {name} has shape {tuple(array.shape)}, the "
                             f"model expects {tuple(leaf.shape)}.")
        if array.dtype != np.dtype(leaf.dtype):
            raise ValueError(f"from_ndarrays: leaf {name} has dtype {array.dtype}, the model "
                             f"expects {np.dtype(leaf.dtype)}.")
        out.append(jnp.asarray(array))
    return jax.tree_util.tree_unflatten(treedef, out)


def local_to_json(local: LocalTraining) -> str:
    """A :class:`LocalTraining` as a JSON string (a Flower config value)."""
    return json.dumps(dataclasses.asdict(local), sort_keys=True)


def local_from_json(text: str) -> LocalTraining:
    """The inverse of :func:`local_to_json` (validated by ``LocalTraining``)."""
    fields = json.loads(text)
    fields["betas"] = tuple(fields["betas"])
    return LocalTraining(**fields)


def client_key(seed: int, partition: int, round_index: int) -> jax.Array:
    """The key of client ``partition``'s local training in jgi round ``round_index``
    (Flower round ``round_index + 1``)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), partition),
                              round_index)


# --------------------------------------------------------------------------- spec


@dataclasses.dataclass(frozen=True)
class FederationSpec:
    """What every process of a local federation builds: model, defenses, training.

    Attributes:
      model: registry name (``jgi.models.MODELS``).
      model_options: options of the model factory besides the defenses' (e.g.
        ``{"width": 32}`` for the MLP), as ``(name, value)`` pairs.
      defenses: defense names (``jgi.defenses.from_names``: "dropout,prune", "none").
      dropout, prune: rates of those defenses (the core paper's by default).
      dp_clip, dp_noise: DP-SGD clip norm tau and noise multiplier sigma.
      local: the local training the server prescribes (sent in every fit config).
      num_clients: clients the server waits for and samples every round (all).
      rounds: Flower rounds.
      seed: the clients' keys (:func:`client_key`).
      input_shape: (H, W, C) of one example.
      round_timeout: seconds the server waits for a round's results.
      connect_timeout: seconds the server waits for all clients to connect.
    """

    model: str = "mlp"
    model_options: tuple[tuple[str, Any], ...] = ()
    defenses: str = "none"
    dropout: float = PAPER_DROPOUT_RATE
    prune: float = PAPER_PRUNE_FRACTION
    dp_clip: float = PAPER_DP.clip_norm
    dp_noise: float = PAPER_DP.noise_multiplier
    local: LocalTraining = LocalTraining(epochs=1, batch_size=None, lr=0.1)
    num_clients: int = 4
    rounds: int = 3
    seed: int = 0
    input_shape: tuple[int, int, int] = (28, 28, 1)
    round_timeout: float = 300.0
    connect_timeout: float = 300.0

    def __post_init__(self):
        if self.model not in models.MODELS:
            raise ValueError(f"FederationSpec.model: unknown model {self.model!r}; valid: "
                             f"{', '.join(sorted(models.MODELS))}.")
        defenses_lib.parse_names(self.defenses)  # raises naming the unknown defense
        if self.num_clients < 1:
            raise ValueError(f"FederationSpec.num_clients must be >= 1, got "
                             f"{self.num_clients}.")
        if self.rounds < 1:
            raise ValueError(f"FederationSpec.rounds must be >= 1, got {self.rounds}.")
        if len(self.input_shape) != 3:
            raise ValueError(f"FederationSpec.input_shape must be (H, W, C), got "
                             f"{self.input_shape}.")
        if self.round_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("FederationSpec: round_timeout and connect_timeout must be > 0 "
                             f"seconds, got {self.round_timeout} and {self.connect_timeout}.")

    def stack(self) -> DefenseStack:
        return defenses_lib.from_names(self.defenses, dropout=self.dropout, prune=self.prune,
                                   dp=DPConfig(clip_norm=self.dp_clip,
                                               noise_multiplier=self.dp_noise))

    def build_model(self) -> Model:
        return models.get(self.model, **dict(self.model_options),
                          **self.stack().model_options())

    def template(self) -> Params:
        """The parameters' shapes and dtypes (no computation)."""
        model = self.build_model()
        return jax.eval_shape(lambda k: model.init(k, self.input_shape), jax.random.key(0))

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields["local"] = json.loads(local_to_json(self.local))
        fields["model_options"] = [list(kv) for kv in self.model_options]
        return json.dumps(fields, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FederationSpec:
        fields = json.loads(text)
        fields["local"] = local_from_json(json.dumps(fields["local"]))
        fields["model_options"] = tuple(tuple(kv) for kv in fields["model_options"])
        fields["input_shape"] = tuple(fields["input_shape"])
        return cls(**fields)


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class ClientRecord:
    """One client's result of one round, as the server received it.

    Attributes:
      round: Flower's round (1-based).
      cid: the client's id in Flower's client manager (the gRPC peer).
      partition: the partition the client says it holds (its fit metric
        ``jgi_partition``), or None for a client that does not say.
      num_examples: the ``num_examples`` the client reported.
      params: the parameters it returned, as Flower delivered them.
      global_params: the global parameters the server sent that round.
      metrics: the client's fit metrics.
      config: the fit config the server sent (the local training under ``jgi_local``).
    """

    round: int
    cid: str
    partition: int | None
    num_examples: int
    params: tuple[np.ndarray, ...]
    global_params: tuple[np.ndarray, ...]
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def round_index(self) -> int:
        """jgi's 0-based round (the learning-rate decay)."""
        return self.round - 1

    def local(self) -> LocalTraining | None:
        """The local training the server prescribed (None when it sent none)."""
        text = self.config.get(LOCAL_CONFIG)
        return None if text is None else local_from_json(text)


def as_gradient(observation: Observation) -> Observation:
    """A one-step weight change read as the gradient it was made of.

    A client that takes one plain SGD step on its whole batch (momentum changes nothing
    in a first step) shares ``W_t - W_k = lr * g``; dividing by the round's learning rate
    gives ``g``, the defended gradient the targeted attacks (IG, CDIA, ...) invert.

    Raises:
      ValueError: the local training is not one plain SGD step (several steps, Adam,
        weight decay): such a change is not a multiple of one gradient; attack it with
        :mod:`jgi.attacks.multistep`.
    """
    local, n = observation.local, observation.num_samples
    if local.shares == "gradient":
        return observation
    if not local.is_single_step(n) or local.optimizer != "sgd" or local.weight_decay:
        raise ValueError(
            f"as_gradient: the client's update is {local.num_steps(n)} local step(s) of "
            f"{local.optimizer} (weight decay {local.weight_decay}); only one plain SGD step "
            "(epochs=1, batch_size=None or >= num_examples, no weight decay) is lr times a "
            "gradient. Attack the weight change with jgi.attacks.multistep.")
    lr = local.learning_rate(observation.round)
    return observation.replace(update=jax.tree.map(lambda u: u / lr, observation.update),
                               local=dataclasses.replace(local, shares="gradient"))


def observation(record: ClientRecord, template: Params, local: LocalTraining | None = None,
                *, gradient: bool = False) -> Observation:
    """The server's :class:`~jgi.fl.Observation` of one recorded client result.

    Args:
      record: a :class:`ClientRecord`.
      template: the model's parameters (or their shapes), for the pytree structure.
      local: the client's local training; by default the one the server sent it.
      gradient: read a one-step update as its gradient (:func:`as_gradient`), the form
        the targeted attacks (IG, CDIA, ...) take for a client that held one image.

    Returns:
      ``Observation(update=W_t - W_k, params=W_t, local, num_samples=num_examples,
      round=record.round - 1)`` (the update divided by the learning rate with
      ``gradient=True``).
    """
    local = local or record.local()
    if local is None:
        raise ValueError("observation: the record carries no local training (the server "
                         f"sent no {LOCAL_CONFIG!r} config); pass local=.")
    w_t = from_ndarrays(record.global_params, template)
    w_k = from_ndarrays(record.params, template)
    obs = Observation(update=jax.tree.map(jnp.subtract, w_t, w_k), params=w_t, local=local,
                      num_samples=record.num_examples, round=record.round_index)
    return as_gradient(obs) if gradient else obs


def same_start(problem: runner.Problem) -> runner.Problem:
    """``problem`` with every victim's initial candidate drawn from its own
    ``victim["init_key"]`` (key data, ``jax.random.key_data``) instead of the runner's
    per-victim split of the run's key.

    Attacking the captured update and jgi's own update from the same start (same key in
    both victims) makes any difference in the reconstructions the updates' doing, not
    the initialisation's: IG's outcome varies more between inits than between these
    updates.
    """
    def init(key, victim, context):
        del key
        return problem.init(jax.random.wrap_key_data(victim["init_key"]), victim, context)

    return problem._replace(init=init)


def _save_arrays(path: Path, arrays: Sequence[np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, *arrays)
    os.replace(tmp, path)


def _load_arrays(path: Path) -> tuple[np.ndarray, ...]:
    with np.load(path) as f:
        return tuple(f[f"arr_{i}"] for i in range(len(f.files)))


RECORDS_FILE = "records.jsonl"


def load_records(folder: str | os.PathLike) -> list[ClientRecord]:
    """The records a :class:`RecordingFedAvg` wrote into ``folder``, in arrival order."""
    folder = Path(folder)
    path = folder / RECORDS_FILE
    if not path.exists():
        raise FileNotFoundError(f"load_records: no {RECORDS_FILE} in {folder} (did the "
                                "server finish a round?).")
    out, globals_ = [], {}
    for line in path.read_text().splitlines():
        meta = json.loads(line)
        r = meta["round"]
        if r not in globals_:
            globals_[r] = _load_arrays(folder / f"global_round{r:03d}.npz")
        out.append(ClientRecord(round=r, cid=meta["cid"], partition=meta["partition"],
                                num_examples=meta["num_examples"],
                                params=_load_arrays(folder / meta["file"]),
                                global_params=globals_[r], metrics=meta["metrics"],
                                config=meta["config"]))
    return out


def _plain(value: Any) -> Any:
    """A Flower scalar (numpy or bytes) as a JSON value."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.generic):
        return value.item()
    return value


class RecordingFedAvg(_FedAvg):
    """Flower's FedAvg that records every client's fit result before averaging it.

    Args:
      local: the local training the server prescribes; sent to every client in the fit
        config (``jgi_local``, with the round under ``jgi_round``) and recorded with it.
      record_dir: if given, every record is also written there (``records.jsonl``, one
        ``.npz`` per client result, one per round's global parameters), so a parent
        process can read them (:func:`load_records`).
      connect_timeout: seconds ``configure_fit`` waits for ``min_available_clients``
        (Flower's own wait is a day); a TimeoutError after that.
      **kwargs: Flower's FedAvg arguments (``initial_parameters``,
        ``min_fit_clients``, ``fraction_evaluate``, ``on_fit_config_fn``, ...).

    Attributes:
      records: the :class:`ClientRecord` list, in arrival order.
      final_parameters: the global parameters after the last aggregation (ndarrays).
    """

    def __init__(self, *, local: LocalTraining, record_dir: str | os.PathLike | None = None,
                 connect_timeout: float = 300.0, **kwargs):
        require_flwr()
        user_config_fn = kwargs.pop("on_fit_config_fn", None)

        def fit_config(server_round: int) -> dict:
            config = dict(user_config_fn(server_round)) if user_config_fn else {}
            config.update({LOCAL_CONFIG: local_to_json(local), ROUND_CONFIG: server_round})
            return config

        super().__init__(on_fit_config_fn=fit_config, **kwargs)
        self.local = local
        self.record_dir = None if record_dir is None else Path(record_dir)
        self.connect_timeout = connect_timeout
        self.records: list[ClientRecord] = []
        self.final_parameters: list[np.ndarray] | None = None
        self._global: dict[int, tuple[np.ndarray, ...]] = {}
        self._config: dict[int, dict] = {}
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)

    def configure_fit(self, server_round, parameters, client_manager):
        from flwr.common import parameters_to_ndarrays
        wanted = max(self.min_available_clients, self.min_fit_clients)
        if not client_manager.wait_for(wanted, timeout=int(self.connect_timeout)):
            raise TimeoutError(f"RecordingFedAvg: {client_manager.num_available()} of "
                               f"{wanted} clients connected within {self.connect_timeout} s.")
        arrays = tuple(np.asarray(a) for a in parameters_to_ndarrays(parameters))
        self._global[server_round] = arrays
        self._config[server_round] = self.on_fit_config_fn(server_round)
        if self.record_dir is not None:
            _save_arrays(self.record_dir / f"global_round{server_round:03d}.npz", arrays)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        from flwr.common import parameters_to_ndarrays
        print(f"[jgi] server: round {server_round}: recording {len(results)} results "
              f"({len(failures)} failures)", flush=True)
        for proxy, res in results:
            metrics = {k: _plain(v) for k, v in (res.metrics or {}).items()}
            partition = metrics.get(PARTITION_METRIC)
            record = ClientRecord(
                round=server_round, cid=str(proxy.cid),
                partition=None if partition is None else int(partition),
                num_examples=int(res.num_examples),
                params=tuple(np.asarray(a) for a in parameters_to_ndarrays(res.parameters)),
                global_params=self._global[server_round], metrics=metrics,
                config={k: _plain(v) for k, v in self._config[server_round].items()})
            self.records.append(record)
            if self.record_dir is not None:
                self._write(record)
        aggregated, metrics = super().aggregate_fit(server_round, results, failures)
        if aggregated is not None:
            self.final_parameters = parameters_to_ndarrays(aggregated)
            if self.record_dir is not None:
                _save_arrays(self.record_dir / "final_params.npz", self.final_parameters)
        return aggregated, metrics

    def _write(self, record: ClientRecord) -> None:
        who = record.partition if record.partition is not None else record.cid
        name = f"round{record.round:03d}_client{who}.npz"
        _save_arrays(self.record_dir / name, record.params)
        meta = {"round": record.round, "cid": record.cid, "partition": record.partition,
                "num_examples": record.num_examples, "metrics": record.metrics,
                "config": record.config, "file": name}
        with open(self.record_dir / RECORDS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(meta, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- client


@functools.lru_cache(maxsize=16)
def _compiled_training(spec: FederationSpec, local: LocalTraining, num_samples: int,
                       round_index: int):
    """The jitted local training, shared by every client of a process with the same
    (local training, number of samples, learning rate)."""
    model = spec.build_model()
    return jax.jit(make_local_training(model, spec.stack(), local, spec.input_shape,
                                       num_samples, round_index))


class JgiClient(_NumPyClient):
    """A Flower NumPyClient that trains a jgi model with a jgi defense stack.

    ``fit`` is jgi's local training (:func:`jgi.fl.local.make_local_training`): the
    :class:`LocalTraining` the server sends (``jgi_local``; the spec's when it sends
    none), every step a defended :func:`jgi.fl.client_update`, the key
    :func:`client_key` of the round. It returns the new parameters, ``num_examples``
    and the metrics ``jgi_partition`` and ``loss`` (the mean training loss).

    Args:
      spec: the federation's :class:`FederationSpec` (model, defenses, seed).
      x: the client's examples (n, H, W, C), normalised as the model expects.
      y: int labels (n,).
      partition: the client's index (its key, its metric).
    """

    def __init__(self, spec: FederationSpec, x: np.ndarray, y: np.ndarray, partition: int):
        require_flwr()
        if tuple(x.shape[1:]) != tuple(spec.input_shape):
            raise ValueError(f"JgiClient: examples of shape {tuple(x.shape[1:])}, the spec's "
                             f"input_shape is {tuple(spec.input_shape)}.")
        if y.shape != (x.shape[0],):
            raise ValueError(f"JgiClient: labels of shape {y.shape}, expected "
                             f"({x.shape[0]},) int labels for the {x.shape[0]} examples.")
        self.spec = spec
        self.x = jnp.asarray(x, jnp.float32)
        self.y = jnp.asarray(y, jnp.int32)
        self.partition = int(partition)
        self.template = spec.template()

    def train(self, params: Params, local: LocalTraining, round_index: int):
        """One round of local training: ``(new params, mean loss)``."""
        n = int(self.x.shape[0])
        cache_round = round_index if local.lr_decay != 1.0 else 0  # same program
        run = _compiled_training(self.spec, local, n, cache_round)
        opt_state = local.optimizer_for(cache_round).init(params)
        new, _, loss = run(params, opt_state, self.x, self.y,
                           client_key(self.spec.seed, self.partition, round_index))
        return new, loss

    def get_parameters(self, config):
        del config
        model = self.spec.build_model()
        return to_ndarrays(model.init(jax.random.key(self.spec.seed), self.spec.input_shape))

    def fit(self, parameters, config):
        local = (local_from_json(config[LOCAL_CONFIG]) if LOCAL_CONFIG in config
                 else self.spec.local)
        round_index = int(config.get(ROUND_CONFIG, 1)) - 1
        t0 = time.monotonic()
        params = from_ndarrays(parameters, self.template)
        new, loss = self.train(params, local, round_index)
        arrays = to_ndarrays(new)
        print(f"[jgi] client {self.partition}: round {round_index + 1} trained in "
              f"{time.monotonic() - t0:.2f} s, loss {float(loss):.4f}", flush=True)
        return (arrays, int(self.x.shape[0]),
                {PARTITION_METRIC: self.partition, "loss": float(loss)})


# --------------------------------------------------------------------------- federation


@dataclasses.dataclass(frozen=True)
class FederationResult:
    """What :func:`run_federation` gives back.

    Attributes:
      records: every client result of every round (:class:`ClientRecord`).
      final_params: the global parameters after the last round (ndarrays).
      folder: where the spec, data, records and the processes' logs are (and
        ``federation.json``: the wall time, port, client processes, flwr version).
      wall_seconds: from the first process start to the server's exit.
    """

    records: list[ClientRecord]
    final_params: tuple[np.ndarray, ...]
    folder: Path
    wall_seconds: float

    def record(self, round: int, partition: int) -> ClientRecord:  # noqa: A002
        """The record of client ``partition`` in Flower round ``round`` (1-based)."""
        for r in self.records:
            if r.round == round and r.partition == partition:
                return r
        have = sorted({(r.round, r.partition) for r in self.records})
        raise KeyError(f"No record of client {partition} in round {round}; recorded "
                       f"(round, client): {have}.")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-chars:]


def _stop(process: subprocess.Popen) -> None:
    """Stops one process this module started (its own process group), SIGTERM then
    SIGKILL after 5 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait(timeout=5)


def run_federation(spec: FederationSpec, clients: Sequence[tuple[np.ndarray, np.ndarray]],
                   initial_params: Params, folder: str | os.PathLike, *,
                   client_processes: int | None = None, timeout: float = 600.0,
                   python: str | None = None, env: dict[str, str] | None = None
                   ) -> FederationResult:
    """Runs a real local Flower federation and returns what its server received.

    One server process (``python -m jgi.integrations.flower server``: Flower's gRPC
    server on 127.0.0.1 with a :class:`RecordingFedAvg`) and ``client_processes``
    processes hosting the clients (``... clients``: Flower gRPC clients, each a
    :class:`JgiClient`), all started here, their output in ``folder/*.log``. Every round
    samples all ``spec.num_clients`` clients.

    Args:
      spec: model, defenses, local training, rounds, seed, timeouts.
      clients: per client, its normalised examples (n, H, W, C) and int labels (n,).
      initial_params: the global parameters of round 1 (the server's; Flower asks no
        client for them).
      folder: the federation's working folder (spec, data, records, logs); created.
      client_processes: processes hosting the clients, 1..num_clients (default: one per
        client).
      timeout: seconds for the whole federation; on expiry every process is stopped and
        a TimeoutError names the logs.
      python: the interpreter of the processes (default: this one).
      env: extra environment variables of the processes.

    Returns:
      :class:`FederationResult`.

    Raises:
      ValueError: client data that do not match ``spec``.
      RuntimeError: a process failed (its log's tail in the message).
      TimeoutError: the federation did not finish within ``timeout``.
    """
    require_flwr()
    if len(clients) != spec.num_clients:
        raise ValueError(f"run_federation: {len(clients)} clients' data for "
                         f"spec.num_clients={spec.num_clients}.")
    procs = client_processes or spec.num_clients
    if not 1 <= procs <= spec.num_clients:
        raise ValueError(f"run_federation: client_processes must be in 1..{spec.num_clients}, "
                         f"got {client_processes}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records_dir = folder / "records"
    if (records_dir / RECORDS_FILE).exists():
        raise ValueError(f"run_federation: {records_dir} holds records of an earlier run; "
                         "use a new folder.")
    template = spec.template()
    initial = to_ndarrays(initial_params)
    from_ndarrays(initial, template)  # checks the initial parameters against the model
    for i, (x, y) in enumerate(clients):
        if tuple(np.shape(x)[1:]) != tuple(spec.input_shape) or np.shape(y) != (len(x),):
            raise ValueError(f"run_federation: client {i} holds x {np.shape(x)}, y "
                             f"{np.shape(y)}; expected (n, {', '.join(map(str, spec.input_shape))})"
                             " and (n,).")
        np.savez(folder / f"client{i}.npz", x=np.asarray(x, np.float32),
                 y=np.asarray(y, np.int32))
    (folder / "spec.json").write_text(spec.to_json())
    _save_arrays(folder / "initial_params.npz", initial)

    port = free_port()
    python = python or sys.executable
    child_env = {**os.environ, **(env or {})}
    common = ["--folder", str(folder), "--port", str(port), "--timeout", str(timeout)]
    groups = [list(range(spec.num_clients))[g::procs] for g in range(procs)]
    started: list[tuple[str, subprocess.Popen, Path]] = []
    t0 = time.monotonic()
    try:
        def start(name: str, args: list[str]) -> None:
            log = folder / f"{name}.log"
            with open(log, "wb") as out:
                p = subprocess.Popen([python, "-m", "jgi.integrations.flower", *args, *common],
                                     stdout=out, stderr=subprocess.STDOUT, env=child_env,
                                     start_new_session=True)
            started.append((name, p, log))

        start("server", ["server"])
        for g, members in enumerate(groups):
            start(f"clients{g}", ["clients", "--partitions", ",".join(map(str, members))])
        server = started[0][1]
        while server.poll() is None:
            for name, p, log in started[1:]:
                if p.poll() not in (None, 0):
                    raise RuntimeError(f"run_federation: {name} exited with code {p.returncode} "
                                       f"before the server finished; {log}:\n{_tail(log)}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"run_federation: not finished after {timeout:.0f} s; logs in "
                                   f"{folder} (server: {_tail(started[0][2], 1500)})")
            time.sleep(0.2)
        wall = time.monotonic() - t0
        if server.returncode != 0:
            raise RuntimeError(f"run_federation: the server exited with code "
                               f"{server.returncode}; {started[0][2]}:\n{_tail(started[0][2])}")
        for _, p, _ in started[1:]:  # clients leave once the server disconnects them
            try:
                p.wait(timeout=max(5.0, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for _, p, _ in started:
            _stop(p)
    records = load_records(records_dir)
    (folder / "federation.json").write_text(json.dumps(
        {"wall_seconds": wall, "port": port, "client_processes": procs,
         "flwr": flwr.__version__}, indent=1))
    return FederationResult(records=records,
                            final_params=_load_arrays(records_dir / "final_params.npz"),
                            folder=folder, wall_seconds=wall)


# --------------------------------------------------------------------------- processes


def _serve(folder: Path, port: int, timeout: float) -> None:
    """The server process: Flower's gRPC server with a :class:`RecordingFedAvg`."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server

    spec = FederationSpec.from_json((folder / "spec.json").read_text())
    initial = list(_load_arrays(folder / "initial_params.npz"))
    n = spec.num_clients
    strategy = RecordingFedAvg(
        local=spec.local, record_dir=folder / "records", connect_timeout=spec.connect_timeout,
        initial_parameters=ndarrays_to_parameters(initial), fraction_fit=1.0,
        fraction_evaluate=0.0, min_fit_clients=n, min_evaluate_clients=0,
        min_available_clients=n)
    history = start_server(server_address=f"127.0.0.1:{port}",
                           config=ServerConfig(num_rounds=spec.rounds,
                                               round_timeout=spec.round_timeout),
                           strategy=strategy)
    del timeout, history
    got = {r.round for r in strategy.records}
    if got != set(range(1, spec.rounds + 1)) or len(strategy.records) != n * spec.rounds:
        raise SystemExit(f"server: recorded {len(strategy.records)} client results in rounds "
                         f"{sorted(got)}, expected {n} in each of rounds 1..{spec.rounds}.")


def _wait_for_port(port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"clients: no server on 127.0.0.1:{port}") from None
            time.sleep(0.1)


def _host_clients(folder: Path, port: int, partitions: list[int], timeout: float) -> None:
    """A client process: one Flower gRPC client (a thread) per partition."""
    from flwr.client import start_client

    t0 = time.monotonic()
    spec = FederationSpec.from_json((folder / "spec.json").read_text())
    clients = []
    for i in partitions:
        with np.load(folder / f"client{i}.npz") as f:
            clients.append(JgiClient(spec, f["x"], f["y"], i))
    warm = from_ndarrays(_load_arrays(folder / "initial_params.npz"), spec.template())
    for c in clients:  # compile before connecting, so rounds are not held up by it
        jax.block_until_ready(c.train(warm, spec.local, 0))
    print(f"[jgi] clients {partitions}: ready in {time.monotonic() - t0:.2f} s", flush=True)
    _wait_for_port(port, t0 + timeout)
    errors: list[BaseException] = []

    def run(client: JgiClient) -> None:
        try:
            start_client(server_address=f"127.0.0.1:{port}", client=client.to_client(),
                         max_wait_time=max(1.0, timeout - (time.monotonic() - t0)))
        except BaseException as e:  # noqa: BLE001 - reported by the process's exit code
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, timeout - (time.monotonic() - t0)))
    if errors:
        raise SystemExit(f"clients {partitions}: {errors[0]!r}")
    if any(t.is_alive() for t in threads):
        raise SystemExit(f"clients {partitions}: still running after {timeout:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jgi.integrations.flower {server,clients}``: the federation's processes,
    started by :func:`run_federation`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("role", choices=("server", "clients"))
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--partitions", default="", help="clients: comma-separated indices")
    args = parser.parse_args(argv)
    require_flwr()
    if args.role == "server":
        _serve(args.folder, args.port, args.timeout)
    else:
        parts = [int(p) for p in args.partitions.split(",") if p.strip()]
        if not parts:
            parser.error("clients needs --partitions, e.g. --partitions 0,1")
        _host_clients(args.folder, args.port, parts, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
