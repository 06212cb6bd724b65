"""FedAvg in which the server sees only masked or encrypted updates and learns their sum.

The clients' local training is :mod:`jgi.fl.fedavg`'s, unchanged: the same
:func:`jgi.fl.local.make_local_training`, ``vmap``-ed over clients with the same keys
(``jax.random.split(key, num_clients)``) and the same per-client optimiser state
(:func:`jgi.fl.fedavg.client_opt_states`). What differs is the step after it: instead
of averaging the clients' parameters, each client flattens its weight change
``W_t - W_k``, scales it by its public weight ``n_k / n`` and hands it to
:func:`~jgi.fl.secure.aggregate.secure_sum`; the server subtracts the decoded sum from
the global parameters. With ``scheme="plaintext"`` this is FedAvg's average up to
float rounding; with SecAgg/LightSecAgg/Paillier it differs by the quantisation error
(at most ``N * 2 * 8 / 2^22 / 2`` per entry with Flower's defaults, after clipping each
scaled delta to ``[-8, 8]``), with CKKS by about 1e-9 per entry.

A client that drops out of a round keeps its local training's optimiser state; its
update is missing from the sum, and the server reweights the sum by
``n / sum_{contributors} n_k`` so it is the contributors' weighted average.

Not carried over from :func:`jgi.fl.fedavg.train`: early stopping and checkpoints (the
rounds run to ``config.rounds``); the reported accuracy is, as there, the test accuracy
at the round with the best mean validation loss.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jgi.defenses.stack import DefenseStack
from jgi.fl.fedavg import ClientData, FedAvgConfig, client_opt_states, evaluate
from jgi.fl.local import make_local_training
from jgi.fl.secure import he
from jgi.fl.secure.aggregate import SecureAggregation, secure_sum
from jgi.fl.secure.protocol import NO_DROPOUTS, Dropouts
from jgi.models.interface import Model


class SecureFedAvgResult(NamedTuple):
    """Outcome of :func:`train`.

    Attributes:
      accuracy: test accuracy at the round with the best mean validation loss.
      final_accuracy: at the last round.
      history: per round: mean train loss, mean validation loss, test accuracy,
        contributors.
      params: the global parameters after the last round.
      costs: per round, the protocol's :meth:`~jgi.fl.secure.protocol.Costs.summary`.
      max_abs_error: per round, the server's error bound on the aggregate
        (quantisation; 0 for plaintext).
    """

    accuracy: float
    final_accuracy: float
    history: dict
    params: object
    costs: list
    max_abs_error: list


def make_client_updates(model: Model, stack: DefenseStack, config: FedAvgConfig,
                        input_shape: tuple[int, ...], n_train: int, num_clients: int):
    """``(params, opt_state, x_train, y_train, key) -> (deltas, opt_state, mean loss)``.

    The local training of :func:`jgi.fl.fedavg.make_round` (same keys, same vmap), with
    each client's weight change ``W_t - W_k`` flattened: ``deltas`` is
    ``(num_clients, num_params)``.
    """
    local = make_local_training(model, stack, config.local_training(), input_shape, n_train)

    def updates(params, opt_state, x_train, y_train, key):
        keys = jax.random.split(key, num_clients)
        if config.adam_state == "reset":
            opt_state = client_opt_states(config, params, num_clients)
        client_params, opt_state, losses = jax.vmap(local, in_axes=(None, 0, 0, 0, 0))(
            params, opt_state, x_train, y_train, keys)
        flat_global, _ = ravel_pytree(params)
        flat_clients = jax.vmap(lambda p: ravel_pytree(p)[0])(client_params)
        return flat_global[None] - flat_clients, opt_state, jnp.mean(losses)

    return updates


def train(model: Model, stack: DefenseStack, data: ClientData, x_test, y_test,
          key: jax.Array, config: FedAvgConfig | None = None,
          aggregation: SecureAggregation | None = None, *,
          dropouts: Callable[[int], Dropouts] | None = None, evaluate_every: int = 1,
          on_round: Callable[[int, dict], None] | None = None) -> SecureFedAvgResult:
    """FedAvg whose server aggregates with ``aggregation.scheme``.

    Args:
      model, stack, data, x_test, y_test, key, config: as in :func:`jgi.fl.fedavg.train`
        (the same key gives the same initialisation and client randomness);
        ``config=None`` is ``FedAvgConfig()``.
      aggregation: :class:`~jgi.fl.secure.aggregate.SecureAggregation` (default SecAgg).
      dropouts: ``round -> Dropouts`` (0-based round), who drops out of each round.
      evaluate_every: evaluate (validation loss, test accuracy) after every this many
        rounds and after the last; 0 never (the history then holds NaN).
      on_round: called after every round with (round, metrics).

    Returns:
      :class:`SecureFedAvgResult`.
    """
    config = config or FedAvgConfig()
    if evaluate_every < 0:
        raise ValueError(f"evaluate_every must be >= 0, got {evaluate_every}.")
    aggregation = aggregation or SecureAggregation()
    num_clients, n_train = data.y_train.shape[:2]
    input_shape = tuple(data.x_train.shape[2:])
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, input_shape)
    _, unravel = ravel_pytree(params)
    opt_state = client_opt_states(config, params, num_clients)
    step = jax.jit(make_client_updates(model, stack, config, input_shape, n_train, num_clients))
    weights = np.full(num_clients, 1.0 / num_clients)  # equal client sizes (stacked data)
    keys = None
    if aggregation.scheme in ("ckks", "paillier"):
        d = ravel_pytree(params)[0].size
        keys = he.make_keys(aggregation.protocol_config(num_clients, d))
    history = {"train_loss": [], "val_loss": [], "test_accuracy": [], "contributors": []}
    costs, errors = [], []
    for r in range(config.rounds):
        k_train, sub = jax.random.split(k_train)
        t0 = time.perf_counter()
        deltas, opt_state, loss = step(params, opt_state, data.x_train, data.y_train, sub)
        deltas = np.asarray(deltas, np.float64) * weights[:, None]
        out = secure_sum(deltas, aggregation, dropouts(r) if dropouts else NO_DROPOUTS,
                         run_id=r, keys=keys)
        contributors = list(out.contributors)
        total = out.total / weights[contributors].sum()
        flat, _ = ravel_pytree(params)
        params = unravel(flat - jnp.asarray(total, flat.dtype))
        val_loss = accuracy = float("nan")
        if evaluate_every and ((r + 1) % evaluate_every == 0 or r + 1 == config.rounds):
            val_loss = float(np.mean([evaluate(model, params, data.x_val[c], data.y_val[c],
                                               config.eval_batch_size)[0]
                                      for c in range(num_clients)]))
            _, accuracy = evaluate(model, params, x_test, y_test, config.eval_batch_size)
        metrics = {"train_loss": float(loss), "val_loss": val_loss, "test_accuracy": accuracy,
                   "contributors": contributors}
        for k, v in metrics.items():
            history[k].append(v)
        costs.append({**out.run.costs.summary(), "round_seconds": time.perf_counter() - t0})
        errors.append(out.error_bound)
        if on_round is not None:
            on_round(r + 1, metrics)
    best = int(np.argmin(np.where(np.isnan(history["val_loss"]), np.inf, history["val_loss"])))
    return SecureFedAvgResult(accuracy=history["test_accuracy"][best],
                              final_accuracy=history["test_accuracy"][-1], history=history,
                              params=params, costs=costs, max_abs_error=errors)


__all__ = ["SecureFedAvgResult", "make_client_updates", "train"]
