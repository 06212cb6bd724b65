"""GradInversion: image batch recovery with BatchNorm statistics and group consistency.

Yin, Mallya, Vahdat, Alvarez, Kautz, Molchanov, "See through Gradients: Image Batch
Recovery via GradInversion", CVPR 2021.

Threat model (:data:`THREAT_MODEL`; :class:`GradInversionConfig` holds what the attacker
does):

- the server *knows* the model, the parameters it sent, and the BatchNorm running
  statistics (mean and variance of every BatchNorm layer's input; they are buffers of
  the global model, :mod:`jgi.models.resnet_bn`), the batch size, and that the batch's
  labels are distinct (the paper's assumption for its label rule);
- it *changes* nothing (honest-but-curious);
- it *sees* one client's gradient of one training step on one batch, computed in
  training mode (each BatchNorm normalises with the batch's own statistics).

The attack (paper section 3; numbers from breaching's ``seethroughgradients.yaml``,
JonasGeiping/breaching, the public re-implementation the paper's authors did not
provide code for, unless the paper states them):

- labels: for non-repeating labels, the ``B`` classes with the most negative row-wise
  minimum ``min_m dW_fc[m, n]`` of the last layer's weight gradient (paper eq. 5,
  :func:`yin_labels`);
- objective per candidate batch ``x``: ``grad_scale * sum_l ||dW_l(x, y) - dW_l||^2``
  (breaching: Euclidean, scale 1e-4; the paper's eq. 4 with alpha_G) ``+ bn_weight *
  R_BN + tv_weight * R_TV + l2_weight * R_l2 + group_weight * R_group``, with
  ``R_BN = sum_l ||mu_l(x) - mu_l^run||_2 + ||var_l(x) - var_l^run||_2`` (eq. 6, from
  DeepInversion; bn 0.1), TV (jgi's anisotropic mean absolute differences,
  :func:`jgi.attacks.regularizers.total_variation`, mean over the batch; 1e-4), ``R_l2``
  the mean over the batch of each image's l2 norm (1e-6), and the group consistency
  ``R_group = ||x_g - mean_g' x_g'||_2`` per image (eq. 9; alpha_group 0.01 in the
  paper, section 4);
- group consistency: ``num_groups`` candidates from different random seeds are
  optimised together, each pulled towards the group mean (the consensus, held fixed
  inside a step by ``stop_gradient`` and recomputed every step). The paper registers
  the candidates to each other (RANSAC-flow) before averaging; jgi does not register
  them (breaching leaves group regularisation out for the same lack of code). The
  final reconstruction is the consensus (:func:`consensus`), as in the paper;
- Adam (lr 0.1 with a linear warm-up of 50 steps and a cosine decay to 0 over
  ``max_iters``, breaching; 20,000 iterations in both), plus Langevin-style noise:
  ``langevin * lr_t * N(0, 1)`` added to each step (breaching 0.01, the paper 0.2),
  from a fixed key folded with the step (:func:`langevin_noise`), so every victim gets
  the same noise sequence;
- each step the candidate is clipped to the valid image box (breaching ``boxed``).

jgi runs it through :mod:`jgi.attacks.runner` (vmapped over victims, a scan over
steps). The best iterate is kept by the total loss; the runner's early stop (loss
below ``stop_loss``, ``stop_patience`` iterations without improvement) applies.
``use_bn_stats=False`` drops R_BN (the ablation of the paper's Table 3 and issue 18's
"worse without them").
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jgi.attacks import runner
from jgi.attacks.analytic import ThreatModel
from jgi.attacks.distances import DISTANCES
from jgi.attacks.regularizers import total_variation
from jgi.fl.client import client_update
from jgi.models.interface import Params
from jgi.models.resnet_bn import BNModel, Stats


THREAT_MODEL = ThreatModel(
    knows="the model, the parameters it sent, the BatchNorm running statistics (buffers "
          "of the global model), the batch size, and that the batch's labels are distinct",
    changes="nothing (honest-but-curious)",
    sees="one client's gradient of one training step on one batch, computed in training "
         "mode (BatchNorm with the batch's own statistics)")

@dataclasses.dataclass(frozen=True)
class GradInversionConfig:
    """Hyperparameters of GradInversion (defaults: breaching's preset and the paper).

    Attributes:
      max_iters: iterations per victim (20,000; scale down for CPU runs).
      lr: Adam's peak learning rate (0.1).
      warmup: linear warm-up steps (50).
      num_groups: candidates from different seeds per victim (the paper uses several;
        jgi defaults to 4).
      grad_scale: weight of the gradient distance (1e-4 with "l2").
      distance: "l2" (breaching, the paper's Euclidean) or "cosine".
      bn_weight: weight of the BatchNorm-statistics term (0.1).
      tv_weight: total variation (1e-4).
      l2_weight: image l2 norm (1e-6).
      group_weight: group consistency (0.01); 0 with one group.
      langevin: std of the Langevin noise per unit learning rate (0.01).
      use_bn_stats: match the running statistics (False: the ablation without them).
      init_std: std of the Gaussian initialisation in the normalised input space.
      box_constraint: clip into the valid image box after each step.
      stop_loss, stop_patience: the runner's early stop.
      chunk_size: iterations per compiled chunk.
    """

    max_iters: int = 20_000
    lr: float = 0.1
    warmup: int = 50
    num_groups: int = 4
    grad_scale: float = 1e-4
    distance: str = "l2"
    bn_weight: float = 0.1
    tv_weight: float = 1e-4
    l2_weight: float = 1e-6
    group_weight: float = 0.01
    langevin: float = 0.01
    use_bn_stats: bool = True
    init_std: float = 1.0
    box_constraint: bool = True
    stop_loss: float = 0.0
    stop_patience: int = 20_000
    chunk_size: int = 100

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"GradInversionConfig.distance {self.distance!r} is unknown; "
                             f"valid: {', '.join(DISTANCES)}.")
        if self.max_iters < 1 or self.num_groups < 1 or self.chunk_size < 1:
            raise ValueError(f"GradInversionConfig: max_iters ({self.max_iters}), num_groups "
                             f"({self.num_groups}) and chunk_size ({self.chunk_size}) must "
                             "be >= 1.")
        if not 0 <= self.warmup < self.max_iters:
            raise ValueError(f"GradInversionConfig.warmup must be in [0, max_iters="
                             f"{self.max_iters}), got {self.warmup}.")
        for name in ("lr", "grad_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GradInversionConfig.{name} must be > 0, got "
                                 f"{getattr(self, name)}.")
        for name in ("bn_weight", "tv_weight", "l2_weight", "group_weight", "langevin",
                     "init_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"GradInversionConfig.{name} must be >= 0, got "
                                 f"{getattr(self, name)}.")

    def schedule(self) -> optax.Schedule:
        """Linear warm-up to ``lr`` then cosine decay to 0 at ``max_iters``."""
        return optax.warmup_cosine_decay_schedule(0.0, self.lr, max(self.warmup, 1),
                                                  self.max_iters, end_value=0.0)

    def optimizer(self) -> optax.GradientTransformationExtraArgs:
        """Adam's direction plus Langevin noise, scaled by the scheduled learning rate."""
        parts = [optax.scale_by_adam()]
        if self.langevin > 0:
            parts.append(langevin_noise(self.langevin))
        parts.append(optax.scale_by_schedule(lambda t: -self.schedule()(t)))
        return optax.chain(*parts)

    def stopping(self) -> runner.StoppingRule:
        return runner.StoppingRule(self.max_iters, self.stop_loss, self.stop_patience)


class _NoiseState(NamedTuple):
    count: jax.Array


def langevin_noise(std: float, seed: int = 0) -> optax.GradientTransformation:
    """Adds ``std * N(0, 1)`` to every update (before the learning rate scales it).

    The noise of step ``t`` is drawn from ``fold_in(key(seed), t)``; the state is only
    the step count (an int, unlike ``optax.add_noise``'s typed key, so the runner can
    checkpoint and gather it).
    """
    def init(params):
        del params
        return _NoiseState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        key = jax.random.fold_in(jax.random.key(seed), state.count)
        leaves, tree = jax.tree.flatten(updates)
        keys = jax.random.split(key, len(leaves))
        noisy = [u + std * jax.random.normal(k, u.shape, u.dtype)
                 for u, k in zip(leaves, keys, strict=True)]
        return jax.tree.unflatten(tree, noisy), _NoiseState(state.count + 1)

    return optax.GradientTransformation(init, update)


def yin_labels(update: Any, classifier: str, batch_size: int) -> jax.Array:
    """The batch's labels by Yin et al.'s rule (paper eq. 5), for distinct labels.

    The ``batch_size`` classes whose column of the last layer's weight gradient
    (features x classes in jgi) has the most negative minimum, in that order (most
    negative first). Works on one update or (with ``jax.vmap``) on many.
    """
    w = update[classifier]["w"]
    if batch_size > w.shape[-1]:
        raise ValueError(f"yin_labels: {batch_size} distinct labels asked for, the model has "
                         f"only {w.shape[-1]} classes; the rule needs distinct labels.")
    return jnp.argsort(jnp.min(w, axis=-2), axis=-1)[..., :batch_size].astype(jnp.int32)


def _l2(a):
    return jnp.sqrt(jnp.sum(jnp.square(a)) + 1e-12)


def bn_loss(stats: Stats, running: Stats) -> jax.Array:
    """``sum_l ||mu_l - mu_l^run||_2 + ||var_l - var_l^run||_2`` (paper eq. 6)."""
    return sum(_l2(stats[k]["mean"] - running[k]["mean"]) + _l2(stats[k]["var"]
                                                                 - running[k]["var"])
               for k in running)


def batch_objective(model: BNModel, config: GradInversionConfig, x: jax.Array,
                    victim: dict, context: dict):
    """Every term but group consistency for one candidate batch ``x`` (B, H, W, C).

    Returns ``(loss, aux)`` with the unweighted terms in ``aux``.
    """
    params = context["params"]
    update = client_update(model, params, x, victim["labels"])
    grad = DISTANCES[config.distance](update, victim["target"])
    _, stats = model.forward_stats(params, x)
    bn = bn_loss(stats, context["running"]) if config.use_bn_stats else jnp.zeros(())
    tv = jnp.mean(jax.vmap(total_variation)(x))
    l2 = jnp.mean(jax.vmap(_l2)(x))
    loss = (config.grad_scale * grad + config.bn_weight * bn + config.tv_weight * tv
            + config.l2_weight * l2)
    return loss, {"grad": grad, "bn": bn, "tv": tv, "l2": l2}


def problem(model: BNModel, input_shape: tuple[int, int, int], batch_size: int,
            config: GradInversionConfig = GradInversionConfig()) -> runner.Problem:
    """GradInversion as a :class:`~jgi.attacks.runner.Problem`.

    Candidate: ``{"x": (num_groups, B, H, W, C)}``. Victim: ``{"target": update,
    "labels": (B,)}``. Context: ``{"params", "running": running stats, "bounds":
    (lower, upper) or None}``.
    """
    if not isinstance(model, BNModel) or model.forward_stats is None:
        raise ValueError(f"GradInversion needs a BatchNorm model from jgi.models.resnet_bn "
                         f"(resnet18_bn, bn_cnn), got {model.name!r}.")
    shape = (config.num_groups, batch_size, *input_shape)

    def init(key, victim, context):
        del victim, context
        return {"x": config.init_std * jax.random.normal(key, shape, jnp.float32)}

    def objective(candidate, victim, context, key):
        del key
        xs = candidate["x"]
        losses, aux = jax.vmap(lambda x: batch_objective(model, config, x, victim,
                                                         context))(xs)
        loss = jnp.sum(losses)
        group = jnp.zeros(())
        if config.num_groups > 1 and config.group_weight > 0:
            mean = jax.lax.stop_gradient(jnp.mean(xs, axis=0))
            group = jnp.sum(jax.vmap(jax.vmap(_l2))(xs - mean)) / batch_size
            loss = loss + config.group_weight * group
        aux = jax.tree.map(jnp.mean, aux)
        return loss, {**aux, "group": group}

    def project(candidate, victim, context):
        del victim
        if not config.box_constraint or context.get("bounds") is None:
            return candidate
        lower, upper = context["bounds"]
        return {"x": jnp.clip(candidate["x"], lower, upper)}

    return runner.Problem(init=init, objective=objective, optimizer=config.optimizer(),
                          project=project)


def consensus(result: runner.AttackResult) -> jax.Array:
    """The group mean of every victim's best candidate: (V, B, H, W, C)."""
    return jnp.mean(result.best["x"], axis=1)


def reconstruct(model: BNModel, params: Params, running: Stats, updates: Any,
                labels: jax.Array, key: jax.Array,
                config: GradInversionConfig = GradInversionConfig(), *,
                input_shape: tuple[int, int, int], bounds=None,
                progress: bool | str = False, checkpoint=None) -> runner.AttackResult:
    """Inverts every victim's batch update with GradInversion, victims in parallel.

    Args:
      model: the BatchNorm model (:mod:`jgi.models.resnet_bn`).
      params: the global parameters the clients computed their updates with.
      running: the running BatchNorm statistics the server holds.
      updates: observed updates, every leaf with a leading victim axis.
      labels: (V, B) int labels (known, or :func:`yin_labels`).
      key: PRNG key of the initialisations (split per victim, then per group).
      config: :class:`GradInversionConfig`.
      input_shape: (H, W, C).
      bounds: per-channel (lower, upper) of valid inputs, or None.
      progress, checkpoint: as :func:`jgi.attacks.runner.run`.

    Returns:
      :class:`~jgi.attacks.runner.AttackResult` whose ``best["x"]`` is (V, G, B, H, W,
      C); :func:`consensus` gives the reconstructions (V, B, H, W, C).
    """
    labels = jnp.asarray(labels, jnp.int32)
    if labels.ndim != 2:
        raise ValueError(f"GradInversion labels must be (victims, batch), got shape "
                         f"{labels.shape}.")
    victims = {"target": updates, "labels": labels}
    context = {"params": params, "running": running,
               "bounds": None if bounds is None else tuple(jnp.asarray(b) for b in bounds)}
    return runner.run(problem(model, tuple(input_shape), labels.shape[1], config), victims,
                      context, key, config.stopping(), chunk_size=config.chunk_size,
                      progress=progress, checkpoint=checkpoint)


__all__ = ["THREAT_MODEL", "GradInversionConfig", "batch_objective", "bn_loss", "consensus",
           "langevin_noise", "problem", "reconstruct", "yin_labels"]
