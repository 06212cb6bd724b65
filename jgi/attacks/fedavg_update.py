"""The leakage study's optimisation attacks on FedAvg updates, by name.

One entry point for the attacks that invert a client's whole local training
(``W_t - W_k``, a :class:`jgi.fl.Observation` with a leading victim axis), so the
experiments that compare them (``experiments.multistep``: one setting;
``experiments.fedavg_attacks``: the study's grid over local data, batch and epochs) run
exactly the same code:

- ``single-step``: IG with the update treated as one gradient of ``n`` dummies
  (:func:`jgi.attacks.multistep.single_step_setup`);
- ``study``: the "not easy" study's multi-step IG, E full-batch steps on ``m`` dummies
  (:func:`~jgi.attacks.multistep.study_setup`; the study used 1-10 dummies against
  hundreds of images, BREADTH.md trap 1);
- ``consistent``: the client's own ``E * ceil(n / B)`` minibatch steps, its learning-rate
  schedule, on all ``n`` dummies, the attacker's fixed batch order
  (:func:`~jgi.attacks.multistep.consistent_setup`);
- ``consistent+order``: the same with the client's shuffling known (an oracle);
- ``dlf``: DLF (:mod:`jgi.attacks.dlf`), per-epoch copies of the dummies combined.

Labels: every attack gets the label multiset it is handed sorted by class (true labels
or inferred counts); the order oracle gets the client's labels in the client's order;
``study`` with ``m < n`` dummies takes ``m`` labels spread evenly over the sorted list.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jgi.attacks import dlf, label_counts, multistep
from jgi.attacks.ig import IGConfig
from jgi.fl.observation import Observation
from jgi.models.interface import Model

ATTACKS = ("single-step", "study", "consistent", "consistent+order", "dlf")


@dataclasses.dataclass(frozen=True)
class UpdateAttackConfig:
    """Settings shared by the attacks of :data:`ATTACKS`.

    Attributes:
      ig: the IG optimisation of the three IG set-ups (Adam, TV, iterations).
      dlf: DLF's settings.
      study_dummies: dummies of the study's set-up (None: ``n``).
    """

    ig: IGConfig = IGConfig(max_iters=200, lr=0.1, tv_weight=1e-2, chunk_size=50)
    dlf: dlf.DLFConfig = dlf.DLFConfig(max_iters=400)
    study_dummies: int | None = None

    def __post_init__(self):
        if self.study_dummies is not None and self.study_dummies < 1:
            raise ValueError(f"UpdateAttackConfig.study_dummies must be >= 1 or None (n "
                             f"dummies), got {self.study_dummies}.")


def check_attacks(names) -> tuple[str, ...]:
    """The names as a tuple; a ValueError naming the unknown one and the valid ones."""
    names = tuple(names)
    for name in names:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    return names


LABEL_SOURCES = ("true", "dimitrov")


def attack_labels(source: str, model: Model, observation: Observation, labels: jax.Array,
                  key: jax.Array, *, num_classes: int,
                  input_shape: tuple[int, int, int]) -> tuple[jax.Array, float]:
    """The label multiset every attack is given, sorted by class, and its count error.

    Args:
      source: ``"true"`` (the clients' own labels) or ``"dimitrov"`` (counts inferred
        by Dimitrov et al.'s interpolation between W_0 and W_T).
      model, observation: the attacked model and the victims' observations.
      labels: (V, n) the clients' true labels (for ``"true"`` and the count error).
      key: PRNG key of the inference's dummy inputs.
      num_classes, input_shape: the data's.

    Returns:
      ((V, n) sorted labels, mean count error over victims; 0 for ``"true"``).
    """
    if source not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {source!r}; valid: {', '.join(LABEL_SOURCES)}")
    n = observation.num_samples
    true_counts = jax.vmap(lambda t: label_counts.counts_of(t, num_classes))(
        jnp.asarray(labels))
    if source == "true":
        counts = true_counts
    else:
        counts = label_counts.infer_counts_victims("dimitrov", observation, model, key=key,
                                                   input_shape=input_shape)
    sorted_labels = jax.vmap(lambda c: label_counts.labels_from_counts(c, n))(counts)
    return sorted_labels, float(jnp.mean(label_counts.count_error(counts, true_counts)))


def reconstruct(name: str, model: Model, observation: Observation, sorted_labels: jax.Array,
                key: jax.Array, config: UpdateAttackConfig = UpdateAttackConfig(), *,
                input_shape: tuple[int, int, int], bounds=None,
                client_labels: jax.Array | None = None,
                client_keys: jax.Array | None = None) -> np.ndarray:
    """Runs attack ``name`` on every victim; the reconstructions in the model's input space.

    Args:
      name: one of :data:`ATTACKS`.
      model: the attacked model.
      observation: the victims' observations (``update`` with a leading victim axis).
      sorted_labels: (V, n) the label multiset each attack is given, sorted by class.
      key: PRNG key of the initialisation.
      config: :class:`UpdateAttackConfig`.
      input_shape: (H, W, C).
      bounds: per-channel (lower, upper) of valid inputs, or None.
      client_labels: (V, n) labels in the client's order (``consistent+order`` only).
      client_keys: (V,) the clients' keys (``consistent+order`` only).

    Returns:
      (V, m, H, W, C): ``m = n``, or ``config.study_dummies`` for ``study``.
    """
    check_attacks([name])
    n = observation.num_samples
    sorted_labels = jnp.asarray(sorted_labels, jnp.int32)
    if name == "dlf":
        result = dlf.reconstruct(model, observation, sorted_labels, key, config.dlf,
                                 input_shape=input_shape, bounds=bounds)
        return np.stack([dlf.combine_copies(r) for r in np.asarray(result.best["x"])])
    labels = sorted_labels
    if name == "single-step":
        setup = multistep.single_step_setup(observation, n)
    elif name == "study":
        m = n if config.study_dummies is None else min(config.study_dummies, n)
        setup = multistep.study_setup(observation, m)
        if m != n:  # m dummies: labels spread evenly over the sorted list
            labels = sorted_labels[:, np.linspace(0, n - 1, m).astype(int)]
    elif name == "consistent":
        setup = multistep.consistent_setup(observation)
    else:  # consistent+order: the oracle that knows the client's shuffle
        if client_labels is None or client_keys is None:
            raise ValueError("consistent+order simulates the client's own shuffling: pass "
                             "client_labels= and client_keys=.")
        setup = multistep.consistent_setup(observation, "client")
        labels = jnp.asarray(client_labels, jnp.int32)
    result = multistep.reconstruct(model, observation, labels, key, setup, config.ig,
                                   input_shape=input_shape, bounds=bounds,
                                   client_keys=client_keys)
    return np.asarray(result.best["x"])


__all__ = ["ATTACKS", "LABEL_SOURCES", "UpdateAttackConfig", "attack_labels", "check_attacks",
           "reconstruct"]
