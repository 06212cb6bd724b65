"""The high-resolution medical-image attack: L-BFGS on the image, gradients + TV + six-norm.

Dao and Nguyen 2023, "Gradient Inversion Attack in Federated Learning for Healthcare"
("Health", BREADTH.md section 3), section 3, eqs. (3)-(6):

    L = alpha_g * MSE(grad, grad') + alpha_tv * sum_i (x'_i - x'_{i+1})^2
        + alpha_norm * sum_i x'_i^6

- only the image is optimised; the label is known (the paper: "labels can be accurately
  reconstructed using existing works"); one image, one gradient (FedSGD);
- the dummy image starts random; L-BFGS ("the L-BFGS optimizer implemented in
  Pytorch"), both semantics of :mod:`jgi.attacks.lbfgs` selectable; the result is
  clipped to [0, 1] at the end (section 3: "the clipping step is needed");
- the weights per resolution (section 4): 512^2 (1, 1.5e-8, 1e-10), 1024^2
  (1, 1.7e-8, 1e-10), 2048^2 (2, 1.7e-8, 1e-10) (:func:`paper_weights`);
- the DLG baseline of Table II is the gradient term alone with coefficient 6
  (:func:`dlg_baseline`).

Choices where the paper is silent:
- ``MSE(grad, grad')``: by default the *sum* of the squared differences over every
  entry of every parameter's gradient (DLG's distance), not their mean. The paper's
  Fig. 3 has L_g "above 10^4" at the start and near 10^-6 at the end, which a sum
  gives; the literal mean (``gradient_reduction="mean"``) divides by the parameter
  count (2.5k to 100k here), which puts the gradient of the loss under PyTorch's L-BFGS
  ``tolerance_grad`` (1e-7) so the steps stop almost at once: measured at 32^2 on the
  retina image, 50 steps, Sigmoid LeNet, SSIM 0.008 with "mean" against 0.73 with
  "sum" (docs/results/highres.md).
- Squared TV: the sum over horizontally and vertically adjacent pixel pairs (both
  directions, every channel), unnormalised, as eq. (4) writes it for "nearby pixels".
- Six-norm: ``sum x^6`` over all pixels and channels, eq. (5) as written (no root).
- Resolutions the paper does not list take the weights of the nearest listed one at or
  above them: every size up to 512 (256 included) uses 512's (1, 1.5e-8, 1e-10), so
  the regularisers' share of the loss shrinks with the pixel count below 512 exactly
  as it grows above it; sizes between listed ones take the next listed one's.
- Initialisation: ``init="normal"`` (``torch.randn``, what DLG's code that the paper
  builds on draws) or ``"uniform"`` (U(0, 1), already in the image range);
  ``"analytic"`` starts from the analytic step (below) made into an image.
- The returned image is the best iterate's (lowest loss, the runner's rule), clipped.
- The gradient term's derivative in the image (``gradient_mode``): by default "jvp",
  reverse-mode over a forward-mode derivative along the gradient residual in parameter
  space (:func:`gradient_term`), the same value and gradient as autodiff's reverse over
  reverse ("double-reverse", what the paper's ``create_graph=True`` code computes) up to
  float rounding, 1.2-2.3x faster per lone evaluation on the 2-core CPU at 64-512^2
  (with ``conv_impl="lax"``; ``benchmarks/highres_throughput.py``). Inside the runner
  (vmapped over victims, L-BFGS in a while loop) the gain shrank to ~1.06x at 256^2 with
  patch convolutions, and lax convolutions were 2x slower there (docs/results/highres.md).

The analytic step (BREADTH.md section 3 note; :mod:`jgi.attacks.analytic`): for one
image the classifier's input, the flattened output of the last convolution (after its
activation), comes back exactly as ``dL/dW @ dL/db / |dL/db|^2``
(:func:`analytic_features`). On the Health LeNet that is a (H/4, W/4, 12) feature map,
not an image. :func:`features_to_image` turns it into a coarse image (channel mean,
min-max scaled to [0, 1], resized to the input size, copied to every channel), the
``init="analytic"`` starting point.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jgi.attacks import analytic, lbfgs, runner
from jgi.fl.client import client_loss, client_update
from jgi.models.interface import Model, Params

INITS = ("normal", "uniform", "analytic")
REDUCTIONS = ("mean", "sum")
GRADIENT_MODES = ("jvp", "double-reverse")

# Section 4 of the paper: resolution -> (alpha_g, alpha_tv, alpha_norm).
PAPER_WEIGHTS = {512: (1.0, 1.5e-8, 1e-10), 1024: (1.0, 1.7e-8, 1e-10),
                 2048: (2.0, 1.7e-8, 1e-10)}
DLG_GRADIENT_WEIGHT = 6.0  # Table II's DLG: the gradient term alone, coefficient 6

# Table I (one chest X-ray): side -> (variables, seconds, MSE, SSIM, PSNR).
PAPER_TABLE_I = {256: (196_608, 30.12, 0.0189, 0.769, 17.24),
                 512: (786_432, 113.0, 0.0013, 0.927, 28.85),
                 1024: (3_145_728, 915.0, 0.0009, 0.934, 30.27),
                 2048: (12_582_912, 5229.29, 0.0006, 0.959, 32.34)}
# Table II at 512^2: method -> (MSE, SSIM, PSNR); the paper prints 0.007 for its own MSE,
# 0.0007 by its PSNR of 31.29 (BREADTH.md section 3).
PAPER_TABLE_II = {"dlg": (0.0561, 0.088, 12.51), "paper": (0.0007, 0.93, 31.29)}
# Fig. 5 (512^2): at noise variance 1e-2, (MSE, SSIM, PSNR).
PAPER_FIG5_AT_1E2 = (0.28, 0.014, 5.5)


def paper_weights(resolution: int) -> tuple[float, float, float]:
    """``(alpha_g, alpha_tv, alpha_norm)`` for a square side (the paper's, or the next up).

    Sides up to 512 take 512's weights (the paper gives none below); above 2048, 2048's.
    """
    if resolution < 1:
        raise ValueError(f"paper_weights: resolution must be >= 1, got {resolution}.")
    for side in sorted(PAPER_WEIGHTS):
        if resolution <= side:
            return PAPER_WEIGHTS[side]
    return PAPER_WEIGHTS[2048]


@dataclasses.dataclass(frozen=True)
class HighResConfig:
    """Hyperparameters of the Health attack (defaults: the paper's at 512^2).

    Attributes:
      alpha_g, alpha_tv, alpha_norm: the loss weights (:func:`paper_weights`).
      gradient_reduction: "mean" (the paper's MSE) or "sum" (DLG's sum of squares).
      max_iters: L-BFGS steps (runner iterations); the paper needs ~250 "epochs".
      lbfgs: "pytorch" (one ``torch.optim.LBFGS.step()`` per iteration) or "optax".
      lr, history_size, inner_iters, tolerance_grad, tolerance_change,
        max_linesearch_steps: as :class:`jgi.attacks.dlg.DLGConfig`.
      init: "normal", "uniform" or "analytic" (see the module docstring).
      gradient_mode: how the gradient term's derivative in the image is computed (the
        same function up to float rounding; :func:`gradient_term`): "jvp" (reverse over
        a parameter-space JVP, ~2x faster on CPU) or "double-reverse" (plain autodiff
        of the gradient distance, reverse over reverse).
      restart_on_nan: restart from the best point with a fresh L-BFGS on a NaN.
      stop_patience: stop after this many steps without a new best (None: never).
      chunk_size: steps per compiled chunk.
    """

    alpha_g: float = 1.0
    alpha_tv: float = 1.5e-8
    alpha_norm: float = 1e-10
    gradient_reduction: str = "sum"
    max_iters: int = 250
    lbfgs: str = "pytorch"
    lr: float = 1.0
    history_size: int = 100
    inner_iters: int = 20
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    max_linesearch_steps: int = 15
    init: str = "normal"
    gradient_mode: str = "jvp"
    restart_on_nan: bool = True
    stop_patience: int | None = None
    chunk_size: int = 10

    def __post_init__(self):
        if self.lbfgs not in lbfgs.SEMANTICS:
            raise ValueError(f"HighResConfig: unknown lbfgs {self.lbfgs!r}; valid: "
                             f"{', '.join(lbfgs.SEMANTICS)}.")
        if self.init not in INITS:
            raise ValueError(f"HighResConfig: unknown init {self.init!r}; valid: "
                             f"{', '.join(INITS)}.")
        if self.gradient_mode not in GRADIENT_MODES:
            raise ValueError(f"HighResConfig: unknown gradient_mode {self.gradient_mode!r}; "
                             f"valid: {', '.join(GRADIENT_MODES)}.")
        if self.gradient_reduction not in REDUCTIONS:
            raise ValueError(f"HighResConfig: unknown gradient_reduction "
                             f"{self.gradient_reduction!r}; valid: {', '.join(REDUCTIONS)}.")
        if self.alpha_g <= 0:
            raise ValueError(f"HighResConfig: alpha_g must be > 0 (the gradient term is the "
                             f"attack), got {self.alpha_g}.")
        for name in ("alpha_tv", "alpha_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"HighResConfig: {name} must be >= 0 (0 switches the term "
                                 f"off), got {getattr(self, name)}.")
        for name in ("max_iters", "history_size", "inner_iters", "max_linesearch_steps",
                     "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"HighResConfig: {name} must be >= 1, got "
                                 f"{getattr(self, name)}.")
        if self.lr <= 0:
            raise ValueError(f"HighResConfig: lr must be > 0, got {self.lr}.")
        if self.stop_patience is not None and self.stop_patience < 1:
            raise ValueError(f"HighResConfig: stop_patience must be >= 1 or None, got "
                             f"{self.stop_patience}.")

    @property
    def name(self) -> str:
        """"dlg-baseline" when both priors are off, else "health"."""
        return "dlg-baseline" if self.alpha_tv == 0 and self.alpha_norm == 0 else "health"

    def stopping(self) -> runner.StoppingRule:
        patience = self.max_iters + 1 if self.stop_patience is None else self.stop_patience
        return runner.StoppingRule(self.max_iters, 0.0, patience)

    def optimizer(self):
        return lbfgs.make(self.lbfgs, history_size=self.history_size, learning_rate=self.lr,
                          max_iter=self.inner_iters, tolerance_grad=self.tolerance_grad,
                          tolerance_change=self.tolerance_change,
                          max_linesearch_steps=self.max_linesearch_steps)


def for_resolution(resolution: int, **overrides: Any) -> HighResConfig:
    """The paper's attack with its weights for a square side (:func:`paper_weights`)."""
    g, tv, norm = paper_weights(resolution)
    return HighResConfig(**{"alpha_g": g, "alpha_tv": tv, "alpha_norm": norm, **overrides})


def dlg_baseline(**overrides: Any) -> HighResConfig:
    """Table II's DLG: the gradient term alone (coefficient 6), the rest as the attack."""
    return HighResConfig(**{"alpha_g": DLG_GRADIENT_WEIGHT, "alpha_tv": 0.0,
                            "alpha_norm": 0.0, **overrides})


def squared_tv(x: jax.Array) -> jax.Array:
    """Eq. (4): sum of squared differences of horizontally and vertically adjacent pixels.

    ``x``: (..., H, W, C); summed over everything.
    """
    dx = x[..., :, 1:, :] - x[..., :, :-1, :]
    dy = x[..., 1:, :, :] - x[..., :-1, :, :]
    return jnp.sum(dx * dx) + jnp.sum(dy * dy)


def six_norm(x: jax.Array) -> jax.Array:
    """Eq. (5): ``sum x^6`` over every entry."""
    x2 = x * x
    return jnp.sum(x2 * x2 * x2)


def gradient_distance(update: Any, target: Any, reduction: str = "mean") -> jax.Array:
    """Squared distance of two updates: mean ("mean", MSE) or sum ("sum") over all entries."""
    a, _ = ravel_pytree(update)
    b, _ = ravel_pytree(target)
    sq = jnp.sum(jnp.square(a - b))
    return sq / a.size if reduction == "mean" else sq


def _jvp_gradient_term(model: Model, reduction: str):
    """The gradient distance with its image derivative as reverse over a parameter JVP.

    With ``u(x) = dL(theta, x)/dtheta`` and ``r = u(x) - target``, the derivative of
    ``s * |r|^2`` (``s`` = 1, or 1 / entries for "mean") in ``x`` is
    ``2 s (du/dx)^T r = 2 s d/dx [dL(theta + t r, x)/dt at t = 0]`` with ``r`` held fixed:
    one forward-mode derivative along ``r`` in parameter space, then one reverse pass in
    ``x``, instead of reverse-mode through the reverse pass that computed ``u``. Same
    value; the same derivative up to float rounding (``tests/attacks/test_highres.py``).
    """

    def pieces(x, params, target, label):
        def loss(p, xx):
            return client_loss(model, p, xx, label, {})

        update = jax.grad(loss)(params, x)
        value = gradient_distance(update, target, reduction)
        direction = jax.lax.stop_gradient(jax.tree.map(lambda a, b: a - b, update, target))
        entries = sum(a.size for a in jax.tree.leaves(direction))
        scale = 1.0 / entries if reduction == "mean" else 1.0
        along = jax.grad(lambda xx: jax.jvp(lambda p: loss(p, xx), (params,),
                                            (direction,))[1])(x)
        return value, (2.0 * scale) * along

    @jax.custom_vjp
    def term(x, params, target, label):
        return pieces(x, params, target, label)[0]

    def fwd(x, params, target, label):
        value, dx = pieces(x, params, target, label)
        return value, (dx, params, target, label)

    def bwd(res, cotangent):
        dx, params, target, label = res
        zeros = jax.tree.map(jnp.zeros_like, (params, target))
        label_ct = np.zeros(label.shape, jax.dtypes.float0) \
            if not jnp.issubdtype(label.dtype, jnp.floating) else jnp.zeros_like(label)
        return (cotangent * dx, *zeros, label_ct)

    term.defvjp(fwd, bwd)
    return term


def gradient_term(model: Model, params: Params, x: jax.Array, label: jax.Array, target: Any,
                  reduction: str = "mean", mode: str = "jvp") -> jax.Array:
    """The gradient distance at a dummy ``x`` (B,H,W,C), differentiable in ``x``.

    ``mode="double-reverse"``: :func:`gradient_distance` of ``client_update`` (autodiff
    differentiates through the reverse pass: reverse over reverse). ``mode="jvp"``: the
    same value, with a custom derivative (:func:`_jvp_gradient_term`; only ``x`` gets a
    non-zero cotangent, the parameters, target and label are constants of the attack).
    Measured on CPU (``benchmarks/highres_throughput.py``, docs/results/highres.md):
    for a lone evaluation "jvp" with ``lenet(..., conv_impl="lax")`` is the fastest
    combination; inside the attack's runner, "jvp" with patch convolutions is.
    """
    if mode == "double-reverse":
        return gradient_distance(client_update(model, params, x, label), target, reduction)
    if mode != "jvp":
        raise ValueError(f"gradient_term: unknown mode {mode!r}; valid: "
                         f"{', '.join(GRADIENT_MODES)}.")
    return _jvp_gradient_term(model, reduction)(x, params, target, label)


def loss_terms(model: Model, params: Params, x: jax.Array, label: jax.Array, target: Any,
               reduction: str = "mean", mode: str = "double-reverse") -> dict[str, jax.Array]:
    """The three unweighted terms ``{"gradient", "tv", "norm"}`` at a dummy ``x`` (B,H,W,C).

    ``mode``: how the gradient term is differentiated (:func:`gradient_term`).
    """
    return {"gradient": gradient_term(model, params, x, label, target, reduction, mode),
            "tv": squared_tv(x), "norm": six_norm(x)}


def total_loss(config: HighResConfig, terms: dict[str, jax.Array]) -> jax.Array:
    """Eq. (3); a switched-off term (weight 0) is left out, not multiplied by 0."""
    loss = config.alpha_g * terms["gradient"]
    if config.alpha_tv:
        loss = loss + config.alpha_tv * terms["tv"]
    if config.alpha_norm:
        loss = loss + config.alpha_norm * terms["norm"]
    return loss


def analytic_features(model: Model, update: Any) -> jax.Array:
    """The classifier's input of a batch-1 update, exactly (flattened, (features,))."""
    return analytic.recover_features(model, update)


def features_to_image(features: jax.Array, feature_shape: tuple[int, int, int],
                      input_shape: tuple[int, int, int]) -> jax.Array:
    """A coarse image from the recovered feature map: channel mean, min-max, resized.

    Args:
      features: (features,) flattened in (H', W', C') order (the LeNet's flatten).
      feature_shape: (H', W', C') of the last convolution's output.
      input_shape: (H, W, C) of the image.
    """
    fmap = features.reshape(feature_shape).mean(-1)
    lo, hi = fmap.min(), fmap.max()
    fmap = (fmap - lo) / jnp.maximum(hi - lo, 1e-12)
    img = jax.image.resize(fmap, input_shape[:2], "linear")
    return jnp.broadcast_to(img[..., None], tuple(input_shape))


def feature_shape_of(model: Model, params: Params, input_shape: tuple[int, int, int]
                     ) -> tuple[int, int, int]:
    """(H', W', C') of the classifier's input for a LeNet-like model on ``input_shape``.

    Found from the last convolution's channels and the classifier's fan-in, assuming a
    square feature map of the input's aspect ratio.
    """
    convs = [k for k in model.layer_order if k != model.classifier]
    channels = params[convs[-1]]["w"].shape[-1]
    n = params[model.classifier]["w"].shape[0] // channels
    h, w = input_shape[:2]
    fh = int(round((n * h / w) ** 0.5))
    if fh * (n // max(fh, 1)) != n:
        raise ValueError(f"Cannot lay {n} feature positions out as a map for input "
                         f"{tuple(input_shape)}.")
    return fh, n // fh, channels


def problem(model: Model, input_shape: tuple[int, int, int],
            config: HighResConfig = HighResConfig()) -> runner.Problem:
    """The Health attack as a :class:`~jgi.attacks.runner.Problem`.

    Candidate: ``{"x": (1, H, W, C)}``. Victim data: ``{"target": update, "label": (1,)
    int, "start": (1, H, W, C)}`` (``start`` is read only with ``init="analytic"``).
    Context: ``{"params": ...}``.
    """
    shape = (1, *tuple(input_shape))

    def init(key, victim, context):
        del context
        if config.init == "analytic":
            return {"x": victim["start"]}
        if config.init == "normal":
            return {"x": jax.random.normal(key, shape, jnp.float32)}
        return {"x": jax.random.uniform(key, shape, jnp.float32)}

    def objective(candidate, victim, context, key):
        del key
        terms = loss_terms(model, context["params"], candidate["x"], victim["label"],
                           victim["target"], config.gradient_reduction, config.gradient_mode)
        return total_loss(config, terms), terms

    def project(candidate, victim, context):
        del victim, context
        return candidate

    optimizer, needs_value_fn = config.optimizer()
    return runner.Problem(init=init, objective=objective, optimizer=optimizer,
                          project=project, needs_value_fn=needs_value_fn,
                          restart_on_nan=config.restart_on_nan)


class HighResResult(NamedTuple):
    """What the attack returns, per victim (leading axis V).

    Attributes:
      images: the best reconstructions clipped to [0, 1], (V, 1, H, W, C).
      raw: the same before clipping.
      features: the analytic step's classifier inputs (V, features), exact.
      attack: the runner's :class:`~jgi.attacks.runner.AttackResult`.
    """

    images: np.ndarray
    raw: np.ndarray
    features: np.ndarray
    attack: runner.AttackResult


def reconstruct(model: Model, params: Params, updates: Any, labels: jax.Array,
                key: jax.Array, config: HighResConfig = HighResConfig(), *,
                input_shape: tuple[int, int, int], progress: bool | str = False,
                checkpoint=None) -> HighResResult:
    """Inverts every victim's one-image gradient, all victims in parallel (vmapped).

    Args:
      model: the attacked model (the paper's: ``lenet(**HEALTH_OPTIONS)``).
      params: the parameters the clients computed their gradients with.
      updates: observed gradients, every leaf with a leading victim axis (or one update).
      labels: the known labels, (V,) or (V, 1).
      key: PRNG key for the dummies' initialisation.
      config: :class:`HighResConfig` (:func:`for_resolution`, :func:`dlg_baseline`).
      input_shape: (H, W, C) of one image.
      progress: show a progress bar.
      checkpoint: optional :class:`~jgi.checkpointing.AttackCheckpoint`.
    """
    updates = runner.with_victim_axis(updates, params)
    n_victims = jax.tree.leaves(updates)[0].shape[0]
    labels = jnp.asarray(labels, jnp.int32).reshape(n_victims, -1)
    if labels.shape[1] != 1:
        raise ValueError(f"The attack inverts one image per gradient; labels give "
                         f"{labels.shape[1]} per victim.")
    features = jax.vmap(lambda u: analytic_features(model, u))(updates)
    victims = {"target": updates, "label": labels}
    if config.init == "analytic":
        fshape = feature_shape_of(model, params, input_shape)
        victims["start"] = jax.vmap(
            lambda f: features_to_image(f, fshape, input_shape)[None])(features)
    result = runner.run(problem(model, input_shape, config), victims, {"params": params},
                        key, config.stopping(), chunk_size=config.chunk_size,
                        progress=progress, checkpoint=checkpoint)
    raw = np.asarray(result.best["x"])
    return HighResResult(images=np.clip(raw, 0.0, 1.0), raw=raw,
                         features=np.asarray(features), attack=result)


__all__ = ["DLG_GRADIENT_WEIGHT", "GRADIENT_MODES", "HighResConfig", "HighResResult", "INITS",
           "PAPER_FIG5_AT_1E2", "PAPER_TABLE_I", "PAPER_TABLE_II", "PAPER_WEIGHTS", "REDUCTIONS",
           "analytic_features", "dlg_baseline", "feature_shape_of", "features_to_image",
           "for_resolution", "gradient_distance", "gradient_term", "loss_terms", "paper_weights",
           "problem", "reconstruct", "six_norm", "squared_tv", "total_loss"]
