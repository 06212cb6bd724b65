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
- ``dlf``: DLF (:mod:`jgi.attacks.dlf`), per-epoch copies of the dummies combined;
- ``dlg``: DLG (:mod:`jgi.attacks.dlg`) as the study runs it in FedAvg (its Section on
  attacks in FL, Fig. 18): ``m`` dummies (``study_dummies``; its reconstruction batch 10)
  with joint soft labels, L-BFGS on the squared-L2 distance between their one-step
  gradient and the update matched *as if it were a gradient*;
- ``idlg``: iDLG the same way (Fig. 19): one dummy, its label read off the update's last
  layer (:func:`jgi.attacks.labels.idlg_labels`, meant for one image's gradient).

``dlg`` and ``idlg`` are in :data:`GRADIENT_ATTACKS`, not :data:`ATTACKS` (whose default
use in ``experiments.multistep`` stays the IG family and DLF); :func:`check_attacks`
accepts :data:`ALL_ATTACKS`. They ignore the label multiset they are handed (DLG
recovers its labels, iDLG reads its one), and they see the update as the study's code
does, ``W_t - W_k`` unscaled (``dlg_scale="raw"``), or, jgi's fairer variant,
divided by the round's learning rate times the number of local steps
(``"mean-gradient"``: for one local step, the client's gradient plus weight decay),
since the L2 distance, unlike IG's cosine, sees the scale.

Labels: every attack gets the label multiset it is handed sorted by class (true labels
or inferred counts); the order oracle gets the client's labels in the client's order;
``study`` with ``m < n`` dummies takes ``m`` labels spread evenly over the sorted list.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgi.attacks import dlf, dlg, label_counts, multistep
from jgi.attacks.ig import IGConfig
from jgi.fl.observation import Observation
from jgi.models.interface import Model

ATTACKS = ("single-step", "study", "consistent", "consistent+order", "dlf")
GRADIENT_ATTACKS = ("dlg", "idlg")
"""The single-gradient attacks run on the update as the study runs them."""
ALL_ATTACKS = ATTACKS + GRADIENT_ATTACKS
DLG_SCALES = ("raw", "mean-gradient")


@dataclasses.dataclass(frozen=True)
class UpdateAttackConfig:
    """Settings shared by the attacks of :data:`ATTACKS`.

    Attributes:
      ig: the IG optimisation of the three IG set-ups (Adam, TV, iterations).
      dlf: DLF's settings.
      dlg: DLG's and iDLG's L-BFGS settings (``labels`` and ``batch_size`` are set per
        attack: joint labels on ``study_dummies`` dummies for ``dlg``, the update's
        label on one dummy for ``idlg``).
      study_dummies: dummies of the study's set-up and of ``dlg`` (None: ``n``).
      dlg_scale: what ``dlg``/``idlg`` match: ``"raw"`` (``W_t - W_k`` as the study's
        code) or ``"mean-gradient"`` (divided by ``lr * local steps``).
    """

    ig: IGConfig = IGConfig(max_iters=200, lr=0.1, tv_weight=1e-2, chunk_size=50)
    dlf: dlf.DLFConfig = dlf.DLFConfig(max_iters=400)
    dlg: dlg.DLGConfig = dlg.DLGConfig()
    study_dummies: int | None = None
    dlg_scale: str = "raw"

    def __post_init__(self):
        if self.study_dummies is not None and self.study_dummies < 1:
            raise ValueError(f"UpdateAttackConfig.study_dummies must be >= 1 or None (n "
                             f"dummies), got {self.study_dummies}.")
        if self.dlg_scale not in DLG_SCALES:
            raise ValueError(f"UpdateAttackConfig.dlg_scale must be one of "
                             f"{', '.join(DLG_SCALES)}, got {self.dlg_scale!r}.")


def check_attacks(names) -> tuple[str, ...]:
    """The names as a tuple; a ValueError naming the unknown one and the valid ones
    (:data:`ALL_ATTACKS`)."""
    names = tuple(names)
    for name in names:
        if name not in ALL_ATTACKS:
            raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ALL_ATTACKS)}")
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


class Reconstruction(NamedTuple):
    """What :func:`run` returns, per victim (leading axis V).

    Attributes:
      images: (V, m, H, W, C) in the model's input space (DLG's unclipped).
      labels: (V, m) the label of each reconstruction: the one it was given (IG set-ups,
        DLF), recovered (DLG: argmax of its soft label) or read off the update (iDLG).
      recovered_labels: True for ``dlg``/``idlg`` (labels from the attack), False when
        the attack was handed them.
    """

    images: np.ndarray
    labels: np.ndarray
    recovered_labels: bool


def dlg_target(observation: Observation, scale: str):
    """The update DLG/iDLG match: raw, or divided by ``lr * local steps``."""
    if scale not in DLG_SCALES:
        raise ValueError(f"dlg scale must be one of {', '.join(DLG_SCALES)}, got {scale!r}.")
    if scale == "raw" or observation.kind == "gradient":
        return observation.update
    local = observation.local
    factor = local.learning_rate(observation.round) * local.num_steps(observation.num_samples)
    return jax.tree.map(lambda u: u / factor, observation.update)


def run(name: str, model: Model, observation: Observation, sorted_labels: jax.Array,
        key: jax.Array, config: UpdateAttackConfig = UpdateAttackConfig(), *,
        input_shape: tuple[int, int, int], bounds=None, client_labels: jax.Array | None = None,
        client_keys: jax.Array | None = None) -> Reconstruction:
    """Runs attack ``name`` on every victim: reconstructions and their labels.

    Args:
      name: one of :data:`ALL_ATTACKS`.
      model: the attacked model.
      observation: the victims' observations (``update`` with a leading victim axis).
      sorted_labels: (V, n) the label multiset each attack is given, sorted by class
        (``dlg`` and ``idlg`` ignore it).
      key: PRNG key of the initialisation.
      config: :class:`UpdateAttackConfig`.
      input_shape: (H, W, C).
      bounds: per-channel (lower, upper) of valid inputs, or None.
      client_labels: (V, n) labels in the client's order (``consistent+order`` only).
      client_keys: (V,) the clients' keys (``consistent+order`` only).

    Returns:
      :class:`Reconstruction`; ``m = n``, ``min(config.study_dummies, n)`` for ``study``
      and ``dlg``, 1 for ``idlg``.
    """
    check_attacks([name])
    n = observation.num_samples
    sorted_labels = jnp.asarray(sorted_labels, jnp.int32)
    m = n if config.study_dummies is None else min(config.study_dummies, n)
    if name in GRADIENT_ATTACKS:
        cfg = (dataclasses.replace(config.dlg, labels="joint", batch_size=m) if name == "dlg"
               else dataclasses.replace(config.dlg, labels="idlg", batch_size=1))
        target = dlg_target(observation, config.dlg_scale)
        result = dlg.reconstruct(model, observation.params, target, key, cfg,
                                 input_shape=input_shape, bounds=bounds, progress=False)
        # DLG: argmax of its soft labels; iDLG: the label it read off the update.
        return Reconstruction(np.asarray(result.images), np.asarray(result.labels), True)
    if name == "dlf":
        result = dlf.reconstruct(model, observation, sorted_labels, key, config.dlf,
                                 input_shape=input_shape, bounds=bounds)
        images = np.stack([dlf.combine_copies(r) for r in np.asarray(result.best["x"])])
        return Reconstruction(images, np.asarray(sorted_labels), False)
    labels = sorted_labels
    if name == "single-step":
        setup = multistep.single_step_setup(observation, n)
    elif name == "study":
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
    return Reconstruction(np.asarray(result.best["x"]), np.asarray(labels), False)


def reconstruct(name: str, model: Model, observation: Observation, sorted_labels: jax.Array,
                key: jax.Array, config: UpdateAttackConfig = UpdateAttackConfig(), *,
                input_shape: tuple[int, int, int], bounds=None,
                client_labels: jax.Array | None = None,
                client_keys: jax.Array | None = None) -> np.ndarray:
    """:func:`run`'s images only, (V, m, H, W, C) in the model's input space."""
    return run(name, model, observation, sorted_labels, key, config, input_shape=input_shape,
               bounds=bounds, client_labels=client_labels, client_keys=client_keys).images


__all__ = ["ALL_ATTACKS", "ATTACKS", "DLG_SCALES", "GRADIENT_ATTACKS", "LABEL_SOURCES",
           "Reconstruction", "UpdateAttackConfig", "attack_labels", "check_attacks",
           "dlg_target", "reconstruct", "run"]
