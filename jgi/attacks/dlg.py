"""Deep Leakage from Gradients (DLG) and improved DLG (iDLG).

DLG: Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019, as its public code
(mit-han-lab/dlg) runs it and NotEasy (Zhu, Huang, Xie 2024, Table II) reruns it:

- a dummy image and dummy label logits, both from N(0, 1) (``torch.randn``), optimised
  jointly; the dummy's label is the softmax of its logits (a soft label);
- the dummy update is the gradient of the cross-entropy of the dummy's prediction
  against its soft label (the client's own loss, :func:`jgi.fl.client_update`);
- objective: the squared L2 distance between the dummy update and the observed one,
  the sum of squared differences over every parameter
  (:func:`jgi.attacks.distances.l2_distance`); no prior, no box constraint;
- L-BFGS, lr 1, 300 steps (Table II), each step one ``torch.optim.LBFGS.step()`` of up
  to 20 inner iterations with history 100 and no line search; ``lbfgs="optax"`` runs
  ``optax.lbfgs`` with its zoom line search instead (:mod:`jgi.attacks.lbfgs`);
- the model is DLG's LeNet (``models.get("lenet")``: Sigmoid, U(-0.5, 0.5) init) on
  inputs in [0, 1]; DLG fails with ReLU or the default initialisation.

iDLG: Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from Gradients", 2020: the same
attack with the label read off the last layer's gradient
(:func:`jgi.attacks.labels.idlg_labels`; batch 1 only) and only the image optimised
(``DLGConfig(labels="idlg")``, or :func:`idlg`). ``labels="known"`` takes the labels
from the caller.

Choices where the papers are silent, and additions:
- A NaN (the loss or its gradient) restarts the victim from its best point with a
  fresh L-BFGS state (``restart_on_nan``; PyTorch's DLG would carry the NaN to the end).
- The returned images are the best iterate's (lowest own loss, the runner's rule), not
  the last; they are not clipped (DLG does not clip), so clip them to [0, 1] before
  metrics.
- ``batch_size`` dummies per victim (NotEasy reconstructs 10 against a client's update);
  their dummy update is the gradient of the batch's mean loss, as the client's.
- A FedAvg weight delta ``W_t - W_k`` is matched as if it were a gradient, unscaled, as
  NotEasy's code does (the study's set-up; BREADTH.md section 1, trap 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgi.attacks import lbfgs, runner
from jgi.attacks.distances import l2_distance
from jgi.attacks.labels import idlg_labels
from jgi.fl.client import ClientRandomness, client_update, num_classes
from jgi.fl.observation import Observation
from jgi.models.interface import Model, Params

LABEL_MODES = ("joint", "idlg", "known")
INITS = ("normal", "uniform")


@dataclasses.dataclass(frozen=True)
class DLGConfig:
    """Hyperparameters of DLG / iDLG (defaults: DLG's code and NotEasy's Table II).

    Attributes:
      max_iters: L-BFGS steps per victim (300).
      lbfgs: "pytorch" (one ``LBFGS.step()`` per iteration, DLG's) or "optax"
        (``optax.lbfgs`` with zoom line search, one L-BFGS iteration per iteration).
      lr: L-BFGS learning rate (1).
      history_size: curvature pairs kept (PyTorch's 100, for both semantics).
      inner_iters: PyTorch's ``max_iter``, inner iterations per step (20).
      tolerance_grad, tolerance_change: PyTorch's step tolerances (1e-7, 1e-9).
      max_linesearch_steps: optax's zoom line-search budget per iteration (15).
      labels: "joint" (DLG: soft labels optimised with the image), "idlg" (from the
        last layer's gradient; batch_size 1) or "known" (passed by the caller).
      batch_size: dummies per victim (1; NotEasy's DLG against FedAvg updates: 10).
      init: the dummies' initialisation: "normal" (DLG's ``torch.randn``, image and
        logits) or "uniform" (image from U(0, 1), logits from N(0, 1)).
      box_constraint: clip the image into ``bounds`` after every step (not DLG's).
      restart_on_nan: restart from the best point with a fresh L-BFGS on a NaN.
      stop_loss: stop a victim once its best loss is below this (0: never; DLG runs
        all its steps).
      stop_patience: stop after this many steps without a new best loss (None: never).
      chunk_size: steps per compiled chunk (host work happens between chunks).
    """

    max_iters: int = 300
    lbfgs: str = "pytorch"
    lr: float = 1.0
    history_size: int = 100
    inner_iters: int = 20
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    max_linesearch_steps: int = 15
    labels: str = "joint"
    batch_size: int = 1
    init: str = "normal"
    box_constraint: bool = False
    restart_on_nan: bool = True
    stop_loss: float = 0.0
    stop_patience: int | None = None
    chunk_size: int = 10

    def __post_init__(self):
        if self.lbfgs not in lbfgs.SEMANTICS:
            raise ValueError(f"DLGConfig: unknown lbfgs {self.lbfgs!r}; valid: "
                             f"{', '.join(lbfgs.SEMANTICS)}.")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"DLGConfig: unknown labels {self.labels!r}; valid: "
                             f"{', '.join(LABEL_MODES)}.")
        if self.init not in INITS:
            raise ValueError(f"DLGConfig: unknown init {self.init!r}; valid: "
                             f"{', '.join(INITS)}.")
        if self.batch_size < 1:
            raise ValueError(f"DLGConfig: batch_size must be >= 1, got {self.batch_size}.")
        if self.labels == "idlg" and self.batch_size != 1:
            raise ValueError(f"DLGConfig: iDLG reads one label off the last layer's gradient, "
                             f"so it needs batch_size=1 (got {self.batch_size}); use "
                             "labels='joint' (DLG) or 'known' for larger batches.")
        for name in ("max_iters", "history_size", "inner_iters", "max_linesearch_steps",
                     "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DLGConfig: {name} must be >= 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise ValueError(f"DLGConfig: lr must be > 0, got {self.lr}.")
        if self.stop_patience is not None and self.stop_patience < 1:
            raise ValueError(f"DLGConfig: stop_patience must be >= 1 or None, got "
                             f"{self.stop_patience}.")

    @property
    def name(self) -> str:
        """"dlg", "idlg" or "dlg-known-labels"."""
        return {"joint": "dlg", "idlg": "idlg", "known": "dlg-known-labels"}[self.labels]

    def stopping(self) -> runner.StoppingRule:
        patience = self.max_iters + 1 if self.stop_patience is None else self.stop_patience
        return runner.StoppingRule(self.max_iters, self.stop_loss, patience)

    def optimizer(self):
        """``(optimizer, needs_value_fn)`` of the chosen L-BFGS semantics."""
        return lbfgs.make(self.lbfgs, history_size=self.history_size, learning_rate=self.lr,
                          max_iter=self.inner_iters, tolerance_grad=self.tolerance_grad,
                          tolerance_change=self.tolerance_change,
                          max_linesearch_steps=self.max_linesearch_steps)


def idlg(**overrides: Any) -> DLGConfig:
    """iDLG's configuration: DLG with the label from the last layer's gradient."""
    return DLGConfig(**{"labels": "idlg", **overrides})


def problem(model: Model, input_shape: tuple[int, int, int], n_classes: int,
            config: DLGConfig = DLGConfig()) -> runner.Problem:
    """DLG / iDLG as a :class:`~jgi.attacks.runner.Problem`.

    Candidate: ``{"x": (B, H, W, C)}`` plus ``"label_logits": (B, classes)`` for joint
    labels. Victim data: ``{"target": observed update}`` plus ``"label": (B,)`` int for
    iDLG and known labels. Context: ``{"params": ..., "bounds": (lower, upper) or None}``.
    """
    shape = (config.batch_size, *tuple(input_shape))
    joint = config.labels == "joint"

    def init(key, victim, context):
        del victim, context
        k_x, k_y = jax.random.split(key)
        if config.init == "normal":
            x = jax.random.normal(k_x, shape, jnp.float32)
        else:
            x = jax.random.uniform(k_x, shape, jnp.float32)
        candidate = {"x": x}
        if joint:
            candidate["label_logits"] = jax.random.normal(
                k_y, (config.batch_size, n_classes), jnp.float32)
        return candidate

    def objective(candidate, victim, context, key):
        y = (jax.nn.softmax(candidate["label_logits"], axis=-1) if joint
             else victim["label"])
        # DLG ignores the client's randomness: fresh model noise every evaluation.
        noise = model.sample_noise(key, tuple(input_shape), config.batch_size)
        update = client_update(model, context["params"], candidate["x"], y,
                               ClientRandomness(model=noise))
        return l2_distance(update, victim["target"]), {}

    def project(candidate, victim, context):
        del victim
        if not config.box_constraint or context.get("bounds") is None:
            return candidate
        lower, upper = context["bounds"]
        return {**candidate, "x": jnp.clip(candidate["x"], lower, upper)}

    optimizer, needs_value_fn = config.optimizer()
    return runner.Problem(init=init, objective=objective, optimizer=optimizer,
                          project=project, needs_value_fn=needs_value_fn,
                          restart_on_nan=config.restart_on_nan)


class DLGResult(NamedTuple):
    """What DLG / iDLG return, per victim (leading axis V).

    Attributes:
      images: the reconstructions (V, B, H, W, C) in the model's input space, unclipped.
      labels: the labels (V, B): argmax of the best soft labels (DLG), the analytic ones
        (iDLG) or the given ones (known).
      soft_labels: the best soft labels (V, B, classes) for DLG, else None.
      attack: the runner's :class:`~jgi.attacks.runner.AttackResult` (losses,
        iterations, stop reasons, timings).
    """

    images: np.ndarray
    labels: np.ndarray
    soft_labels: np.ndarray | None
    attack: runner.AttackResult


def reconstruct(model: Model, params: Params, updates: Any, key: jax.Array,
                config: DLGConfig = DLGConfig(), *, input_shape: tuple[int, int, int],
                labels: jax.Array | None = None, bounds=None, progress: bool | str = True,
                checkpoint=None) -> DLGResult:
    """Inverts every victim's update with DLG or iDLG, all victims in parallel.

    Args:
      model: the attacked model (DLG's: ``models.get("lenet")``).
      params: the parameters the clients computed their updates with.
      updates: observed updates (gradients, or FedAvg weight deltas matched as if they
        were gradients), every leaf with a leading victim axis (or one update without).
      key: PRNG key for the dummies' initialisation.
      config: :class:`DLGConfig` (iDLG: :func:`idlg`).
      input_shape: (H, W, C) of one input.
      labels: with ``config.labels == "known"``, the labels (V,) or (V, B); ignored
        otherwise.
      bounds: (lower, upper) of valid inputs, for ``config.box_constraint``.
      progress: show a progress bar (a string is its description).
      checkpoint: optional :class:`~jgi.checkpointing.AttackCheckpoint`.

    Returns:
      :class:`DLGResult`.
    """
    updates = runner.with_victim_axis(updates, params)
    n_victims = jax.tree.leaves(updates)[0].shape[0]
    victims = {"target": updates}
    if config.labels == "idlg":
        victims["label"] = idlg_labels(updates, model.classifier).reshape(n_victims, 1)
    elif config.labels == "known":
        if labels is None:
            raise ValueError("DLGConfig(labels='known') needs labels= (V,) or (V, batch).")
        labels = jnp.asarray(labels, jnp.int32).reshape(n_victims, -1)
        if labels.shape[1] != config.batch_size:
            raise ValueError(f"labels give {labels.shape[1]} per victim, the config "
                             f"reconstructs batch_size={config.batch_size}.")
        victims["label"] = labels
    context = {"params": params,
               "bounds": None if bounds is None else tuple(jnp.asarray(b) for b in bounds)}
    n_classes = num_classes(model, params)
    result = runner.run(problem(model, input_shape, n_classes, config), victims, context, key,
                        config.stopping(), chunk_size=config.chunk_size, progress=progress,
                        checkpoint=checkpoint)
    if config.labels == "joint":
        soft = np.asarray(jax.nn.softmax(result.best["label_logits"], axis=-1))
        out_labels = soft.argmax(-1).astype(np.int32)
    else:
        soft = None
        out_labels = np.asarray(victims["label"])
    return DLGResult(images=np.asarray(result.best["x"]), labels=out_labels,
                     soft_labels=soft, attack=result)


def reconstruct_observation(model: Model, observation: Observation, key: jax.Array,
                            config: DLGConfig = DLGConfig(), *,
                            input_shape: tuple[int, int, int], labels: jax.Array | None = None,
                            bounds=None, progress: bool | str = True,
                            checkpoint=None) -> DLGResult:
    """:func:`reconstruct` on what the server observed (:class:`jgi.fl.Observation`).

    Any observation is accepted: a one-step gradient (DLG's and iDLG's setting) or a
    FedAvg weight delta, which DLG matches as if it were a gradient (NotEasy's set-up,
    which is why it fails there). ``observation.update`` may carry a leading victim axis.
    """
    return reconstruct(model, observation.params, observation.update, key, config,
                       input_shape=input_shape, labels=labels, bounds=bounds,
                       progress=progress, checkpoint=checkpoint)


__all__ = ["DLGConfig", "DLGResult", "INITS", "LABEL_MODES", "idlg", "problem", "reconstruct",
           "reconstruct_observation"]
