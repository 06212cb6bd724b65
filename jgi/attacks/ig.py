"""Inverting Gradients (IG).

Geiping, Bauermeister, Droege, Moeller, "Inverting Gradients - How easy is it to break
privacy in federated learning?", NeurIPS 2020; with the settings of the core paper
(Scheliga et al., "Combining stochastic defenses ...", section 5.2) and its authors'
public code:

- dummy image initialised from N(0, 1) in the model's (normalised) input space;
- gradient distance: cosine distance over all gradient entries concatenated;
- total-variation prior (anisotropic, mean absolute differences); weight
  ``tv_weight``. The paper's text says 0.01; the authors' configs use 0.1 for the CNN
  and ResNet-18 and 1e-4 for the ViT (:data:`TV_WEIGHTS`);
- Adam, lr 1 (betas 0.9, 0.999), applied to the *sign* of the gradient and followed by
  a projection onto the valid image box, as in the authors' code (``use_grad_signs``,
  ``clip_dummies``); both can be switched off;
- learning rate x0.1 when the loss has not improved (relative tolerance 1e-4) for 400
  iterations (``optax.contrib.reduce_on_plateau``; PyTorch's ReduceLROnPlateau reduces
  after 401, a one-step difference);
- stop at loss < 1e-5, or after 4,000 iterations without improvement, or 20,000
  iterations; keep the best iterate;
- labels known (they are recoverable analytically for batch size 1:
  :func:`jgi.attacks.labels.idlg_labels`).

IG ignores the client's randomness: for a stochastic model it samples fresh noise from
the model every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgi.attacks import runner
from jgi.attacks.distances import DISTANCES
from jgi.attacks.regularizers import total_variation
from jgi.defenses.stack import NO_DEFENSE, DefenseStack
from jgi.fl.client import ClientRandomness, client_update
from jgi.models.interface import Model, Params

# TV weights of the core paper's authors' public configs, per model.
TV_WEIGHTS = {"cnn": 0.1, "resnet18": 0.1, "vit": 1e-4}


@dataclasses.dataclass(frozen=True)
class IGConfig:
    """Hyperparameters of Inverting Gradients (defaults: the core paper's).

    Attributes:
      max_iters: iteration limit per victim (paper: 20,000).
      lr: Adam learning rate (paper: 1).
      betas: Adam betas.
      tv_weight: weight of the total-variation prior (paper text 0.01; see TV_WEIGHTS).
      distance: "cosine" (IG) or "l2" (DLG).
      plateau_patience: iterations without improvement before lr x plateau_factor (400).
      plateau_factor: learning-rate factor on a plateau (0.1).
      plateau_rtol: relative improvement that counts as one (1e-4, PyTorch's default).
      stop_loss: stop when the best loss is below this (1e-5).
      stop_patience: stop after this many iterations without improvement (4,000).
      signed_gradients: feed sign(grad) to Adam (authors' code: True).
      box_constraint: project the dummy onto the valid image range after each step
        (authors' code: True).
      init_std: standard deviation of the Gaussian initialisation.
      chunk_size: iterations per compiled chunk (host work happens between chunks).
    """

    max_iters: int = 20_000
    lr: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    tv_weight: float = 0.01
    distance: str = "cosine"
    plateau_patience: int = 400
    plateau_factor: float = 0.1
    plateau_rtol: float = 1e-4
    stop_loss: float = 1e-5
    stop_patience: int = 4_000
    signed_gradients: bool = True
    box_constraint: bool = True
    init_std: float = 1.0
    chunk_size: int = 100

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(
                f"Unknown distance {self.distance!r}; valid: {', '.join(DISTANCES)}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if self.tv_weight < 0:
            raise ValueError(f"tv_weight must be >= 0, got {self.tv_weight}.")

    def stopping(self) -> runner.StoppingRule:
        return runner.StoppingRule(self.max_iters, self.stop_loss, self.stop_patience)

    def optimizer(self, sign_mask=None) -> optax.GradientTransformationExtraArgs:
        """sign (optional) -> Adam(lr) -> reduce-on-plateau.

        Args:
          sign_mask: with signed gradients, a pytree of bools (or a function of the
            params returning one) selecting which optimised quantities get the sign;
            None signs them all.
        """
        parts = []
        if self.signed_gradients:
            sign = optax.scale_by_sign()
            parts.append(sign if sign_mask is None else optax.masked(sign, sign_mask))
        parts += [
            optax.adam(self.lr, b1=self.betas[0], b2=self.betas[1]),
            optax.contrib.reduce_on_plateau(factor=self.plateau_factor,
                                            patience=self.plateau_patience,
                                            rtol=self.plateau_rtol),
        ]
        return optax.chain(*parts)


def image_objective(model: Model, config: IGConfig, x: jax.Array, victim: dict,
                    params: Params, randomness: ClientRandomness,
                    stack: DefenseStack = NO_DEFENSE):
    """Distance between the dummy image's update and the observed one, plus TV.

    The dummy update is the client's own computation (:func:`jgi.fl.client_update`) run
    on the dummy image with ``randomness`` and the gradient-level defenses of ``stack``
    that the attack mimics. Shared by IG and the attacks built on it. Returns
    ``(loss, aux)``.
    """
    update = client_update(model, params, x[None], victim["label"][None], randomness, stack)
    distance = DISTANCES[config.distance](update, victim["target"])
    tv = total_variation(x)
    return distance + config.tv_weight * tv, {"distance": distance, "tv": tv}


def box_projection(config: IGConfig):
    """``project`` that clips ``candidate["x"]`` into ``context["bounds"]``."""
    def project(candidate, victim, context):
        del victim
        if not config.box_constraint or context.get("bounds") is None:
            return candidate
        lower, upper = context["bounds"]
        return {**candidate, "x": jnp.clip(candidate["x"], lower, upper)}
    return project


def problem(model: Model, input_shape: tuple[int, int, int],
            config: IGConfig = IGConfig()) -> runner.Problem:
    """Inverting Gradients as a :class:`~jgi.attacks.runner.Problem`.

    Victim data: ``{"target": observed update, "label": int}``. Context:
    ``{"params": model params, "bounds": (lower, upper) or None}``.
    """
    input_shape = tuple(input_shape)

    def init(key, victim, context):
        del victim, context
        return {"x": config.init_std * jax.random.normal(key, input_shape, jnp.float32)}

    def objective(candidate, victim, context, key):
        # IG ignores the client's randomness: fresh model noise every step, and neither
        # DP nor pruning applied to the dummy update.
        noise = model.sample_noise(key, input_shape, 1)
        return image_objective(model, config, candidate["x"], victim, context["params"],
                               ClientRandomness(model=noise))

    return runner.Problem(init=init, objective=objective, optimizer=config.optimizer(),
                          project=box_projection(config))


def reconstruct(model: Model, params: Params, updates: Any, labels: jax.Array,
                key: jax.Array, config: IGConfig = IGConfig(), *,
                input_shape: tuple[int, int, int], bounds=None,
                progress: bool | str = True, checkpoint=None) -> runner.AttackResult:
    """Inverts every victim's update with IG, all victims in parallel.

    Args:
      model: the attacked model (the server knows it).
      params: the parameters the clients computed their updates with.
      updates: observed updates, every leaf with a leading victim axis.
      labels: labels (V,) known or from :func:`~jgi.attacks.labels.idlg_labels`, or soft
        labels (V, classes) for mixed inputs.
      key: PRNG key for the dummy initialisation (and any sampled noise).
      config: :class:`IGConfig`.
      input_shape: (H, W, C) of one input.
      bounds: per-channel (lower, upper) of valid inputs in the model's input space,
        or None for no box constraint.
      progress: show a progress bar (a string is its description).
      checkpoint: optional :class:`~jgi.checkpointing.AttackCheckpoint`.

    Returns:
      :class:`~jgi.attacks.runner.AttackResult`; ``result.best["x"]`` holds the
      reconstructions (V, H, W, C) in the model's input space.
    """
    labels = jnp.asarray(labels)
    labels = labels.astype(jnp.int32 if labels.ndim == 1 else jnp.float32)
    victims = {"target": updates, "label": labels}
    context = {"params": params,
               "bounds": None if bounds is None else tuple(jnp.asarray(b) for b in bounds)}
    return runner.run(problem(model, input_shape, config), victims, context, key,
                      config.stopping(), chunk_size=config.chunk_size, progress=progress,
                      checkpoint=checkpoint)


__all__ = ["IGConfig", "TV_WEIGHTS", "image_objective", "problem", "reconstruct",
           "box_projection"]
