"""Data Leakage in Federated averaging (DLF).

Dimitrov, Balunovic, Konstantinov, Vechev, "Data leakage in federated averaging", TMLR
2022; the settings of its public JAX code (eth-sri/fedavg_leakage, read, not copied:
``flax_get_attack_loss_and_update``, mode ``full_many`` with ``reorder_prior
l2_max_conv``) and of the "not easy" study's runs (BREADTH.md, Table II: Adam lr 0.1,
400 iterations, TV 2e-4, clip prior 10, order prior 6.075, local lr 0.004).

The attacker reconstructs all ``n`` local images of a client from its weight change
``W_0 - W_T``, knowing the local training (plain SGD, lr, B, E, n) and the label counts
(:mod:`jgi.attacks.label_counts`, Dimitrov's interpolation by default):

- **simulation**: every epoch ``e`` trains on its own copy ``X_e`` of the ``n`` dummies
  (``E * n`` dummies in all), in a fixed batch order, with the labels sorted by class
  (:func:`jgi.attacks.label_counts.labels_from_counts`) in every epoch; the client's
  shuffle is unknown, and the per-epoch copies are free to follow it
  (:func:`jgi.attacks.multistep.simulate` with per-epoch inputs, the same step as
  :mod:`jgi.fl.local`). ``per_epoch_copies=False`` shares one copy across epochs
  (the original's ``full`` mode);
- **distance**: layer-weighted squared L2 between the observed and the simulated
  ``(W_0 - W_T) / lr``, layer ``l`` (forward order, ``model.layer_order``) weighted
  ``exp(-l)`` (the original's ``att_exp_layers``), divided by ``ceil(n / B)``, times
  ``distance_weight``;
- **epoch-order-invariant prior** (``order_weight``): the images of each epoch go
  through one fixed random 3x3 convolution with 96 output channels (LeCun-normal
  kernel, zero bias, SAME padding: flax's ``nn.Conv`` default initialisation), the
  maximum over the epoch's ``n`` images is taken per feature and pixel (a set
  function, blind to the order), and the mean squared difference of these maxima is
  averaged over all ``E x E`` pairs of epochs;
- **clip prior** (``clip_weight``): ``sum over pixels of mean over images of
  (u - clip(u, 0, 1))^2`` with ``u`` the dummy in [0, 1] pixel units;
- **TV** (``tv_weight``): jgi's anisotropic total variation
  (:func:`jgi.attacks.regularizers.total_variation`), mean over dummies;
- Adam, lr ``lr`` decayed by ``lr_decay`` every ``lr_decay_steps`` iterations
  (0.997 per 20, smoothly, as ``optax.exponential_decay``), ``max_iters`` iterations, no
  early stop, no box projection (the clip prior replaces it), the last iterate's loss
  tracked by the runner (the best iterate is returned).

Choices where jgi differs from the original code: the distance weight is constant
(the original ramps it from 4 down to 2 over the first half of the iterations;
``distance_weight=2`` is its value for the second half), because the runner's objective
does not see the iteration; the original's TV is its own ``total_variation`` (form not
in the paper), jgi uses its own; one restart.

After the optimisation, :func:`combine_copies` matches every epoch's copy to epoch 0's
(Hungarian assignment on PSNR, as the original's ``compute_matching``) and averages
them: the ``n`` reconstructions.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi.attacks import runner
from jgi.attacks.multistep import simulated_update
from jgi.attacks.regularizers import total_variation
from jgi.fl.local import LocalTraining
from jgi.fl.observation import Observation
from jgi.models.interface import Model, Params


@dataclasses.dataclass(frozen=True)
class DLFConfig:
    """DLF's hyperparameters (defaults: the "not easy" study's, from DLF's scripts).

    Attributes:
      max_iters: iterations (400).
      lr: Adam learning rate (0.1).
      lr_decay, lr_decay_steps: exponential decay of the lr (0.997 per 20 iterations).
      distance_weight: weight of the layer-weighted L2 distance (2; see module notes).
      layer_decay: weight layer ``l`` by ``exp(-l)`` (True) or all by 1.
      tv_weight: TV weight (2e-4).
      clip_weight: clip prior weight (10).
      order_weight: epoch-order-invariant prior weight (6.075).
      order_features: channels of the prior's random convolution (96).
      order_seed: seed of that convolution's kernel.
      per_epoch_copies: one copy of the dummies per epoch (True, ``full_many``) or one
        shared copy (``full``).
      init_std: std of the N(0, std^2) initialisation in normalised input space.
      chunk_size: iterations per compiled chunk.
    """

    max_iters: int = 400
    lr: float = 0.1
    lr_decay: float = 0.997
    lr_decay_steps: int = 20
    distance_weight: float = 2.0
    layer_decay: bool = True
    tv_weight: float = 2e-4
    clip_weight: float = 10.0
    order_weight: float = 6.075
    order_features: int = 96
    order_seed: int = 0
    per_epoch_copies: bool = True
    init_std: float = 1.0
    chunk_size: int = 50

    def __post_init__(self):
        if self.max_iters < 1:
            raise ValueError(f"DLFConfig.max_iters must be >= 1, got {self.max_iters}.")
        if self.lr <= 0:
            raise ValueError(f"DLFConfig.lr must be > 0, got {self.lr}.")
        for name in ("distance_weight", "tv_weight", "clip_weight", "order_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"DLFConfig.{name} must be >= 0, got {getattr(self, name)}.")
        if not 0 < self.lr_decay <= 1 or self.lr_decay_steps < 1:
            raise ValueError("DLFConfig.lr_decay must be in (0, 1] and lr_decay_steps >= 1, "
                             f"got {self.lr_decay} and {self.lr_decay_steps}.")
        if self.order_features < 1:
            raise ValueError(f"DLFConfig.order_features must be >= 1, got "
                             f"{self.order_features}.")

    def optimizer(self) -> optax.GradientTransformation:
        return optax.adam(optax.exponential_decay(self.lr, self.lr_decay_steps,
                                                  self.lr_decay))

    def stopping(self) -> runner.StoppingRule:
        return runner.StoppingRule(self.max_iters, loss_below=-math.inf,
                                   patience=self.max_iters)


def layer_weights(model: Model, params: Params, decay: bool = True) -> Params:
    """``exp(-l)`` for every leaf of layer ``l`` (forward order), params-shaped."""
    order = list(model.layer_order) or list(params)
    missing = [k for k in params if k not in order]
    order += missing
    return {k: jax.tree.map(lambda _, i=i: float(np.exp(-i)) if decay else 1.0, params[k])
            for i, k in enumerate(o for o in order if o in params)}


def weighted_l2(a: Params, b: Params, weights: Params) -> jax.Array:
    """``sum_leaves w * |a - b|^2``."""
    return sum(jax.tree.leaves(jax.tree.map(lambda x, y, w: w * jnp.sum(jnp.square(x - y)),
                                            a, b, weights)))


def order_kernel(config: DLFConfig, channels: int) -> jax.Array:
    """The order prior's random 3x3 kernel (3, 3, C, F), LeCun normal (fan-in scaled
    truncated normal, flax's default)."""
    init = jax.nn.initializers.lecun_normal()
    return init(jax.random.key(config.order_seed), (3, 3, channels, config.order_features),
                jnp.float32)


def order_prior(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Epoch-order-invariant prior of per-epoch dummies (E, n, H, W, C)."""
    e, n = x.shape[:2]
    feats = jax.lax.conv_general_dilated(
        x.reshape(e * n, *x.shape[2:]), kernel, (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    maxima = jnp.max(feats.reshape(e, n, *feats.shape[1:]), axis=1)  # (E, H, W, F)
    diff = maxima[:, None] - maxima[None, :]
    return jnp.mean(jnp.mean(jnp.square(diff), axis=(2, 3, 4)))


def clip_prior(x: jax.Array, bounds) -> jax.Array:
    """``sum_pixels mean_images (u - clip(u, 0, 1))^2``, ``u`` the dummies in pixel units."""
    lower, upper = bounds
    flat = x.reshape(-1, *x.shape[-3:])
    u = (flat - lower) / (upper - lower)
    return jnp.sum(jnp.mean(jnp.square(u - jnp.clip(u, 0.0, 1.0)), axis=0))


def dummy_shape(local: LocalTraining, num_samples: int, input_shape, config: DLFConfig):
    lead = (local.epochs, num_samples) if config.per_epoch_copies else (num_samples,)
    return (*lead, *tuple(input_shape))


def problem(model: Model, input_shape: tuple[int, int, int], local: LocalTraining,
            num_samples: int, config: DLFConfig = DLFConfig(), *,
            round_index: int = 0) -> runner.Problem:
    """DLF as a :class:`~jgi.attacks.runner.Problem`.

    Victim data: ``{"target": observed W_0 - W_T, "label": (n,) int labels}``. Context:
    ``{"params": W_0, "bounds": (lower, upper) or None, "weights": layer weights,
    "kernel": the order prior's kernel}``.
    """
    if local.optimizer != "sgd":
        raise ValueError("DLF simulates plain SGD (the paper's assumption); the "
                         f"observation's local training uses {local.optimizer!r}.")
    shape = dummy_shape(local, num_samples, input_shape, config)
    lr = local.learning_rate(round_index)
    k_batches = local.steps_per_epoch(num_samples)[0] + (
        local.steps_per_epoch(num_samples)[1] > 0)

    def init(key, victim, context):
        del victim, context
        return {"x": config.init_std * jax.random.normal(key, shape, jnp.float32)}

    def objective(candidate, victim, context, key):
        x = candidate["x"]
        update = simulated_update(model, context["params"], x, victim["label"], local, key,
                                  order="fixed", round_index=round_index)
        scaled = jax.tree.map(lambda u: u / lr, update)
        target = jax.tree.map(lambda u: u / lr, victim["target"])
        distance = weighted_l2(scaled, target, context["weights"]) / k_batches
        flat = x.reshape(-1, *x.shape[-3:])
        tv = jnp.mean(jax.vmap(total_variation)(flat))
        clip = (clip_prior(x, context["bounds"]) if context["bounds"] is not None
                else jnp.zeros(()))
        order = (order_prior(x, context["kernel"]) if config.per_epoch_copies
                 and local.epochs > 1 and config.order_weight > 0 else jnp.zeros(()))
        loss = (config.distance_weight * distance + config.tv_weight * tv
                + config.clip_weight * clip + config.order_weight * order)
        return loss, {"distance": distance, "tv": tv, "clip": clip, "order": order}

    def project(candidate, victim, context):
        del victim, context
        return candidate

    return runner.Problem(init=init, objective=objective, optimizer=config.optimizer(),
                          project=project)


def reconstruct(model: Model, observation: Observation, labels: jax.Array, key: jax.Array,
                config: DLFConfig = DLFConfig(), *, input_shape: tuple[int, int, int],
                bounds=None, progress: bool | str = False,
                checkpoint=None) -> runner.AttackResult:
    """Runs DLF on every victim (``observation.update`` with a leading victim axis).

    Args:
      model: the attacked model.
      observation: the victims' observations (shared params, local training, n).
      labels: (V, n) int labels (e.g. ``labels_from_counts`` of inferred counts).
      key: PRNG key of the initialisation.
      config: :class:`DLFConfig`.
      input_shape: (H, W, C).
      bounds: per-channel (lower, upper) of valid inputs (for the clip prior), or None.
      progress, checkpoint: as :func:`jgi.attacks.runner.run`.

    Returns:
      :class:`~jgi.attacks.runner.AttackResult`; ``best["x"]`` is (V, E, n, H, W, C)
      with per-epoch copies (combine with :func:`combine_copies`), else (V, n, H, W, C).
    """
    n = observation.num_samples
    labels = jnp.asarray(labels, jnp.int32)
    v = jax.tree.leaves(observation.update)[0].shape[0]
    if labels.shape != (v, n):
        raise ValueError(f"labels must be (victims, n) = {(v, n)}, got {labels.shape}.")
    params = observation.params
    context = {"params": params,
               "bounds": None if bounds is None else tuple(jnp.asarray(b) for b in bounds),
               "weights": layer_weights(model, params, config.layer_decay),
               "kernel": order_kernel(config, input_shape[-1])}
    victims = {"target": observation.update, "label": labels}
    prob = problem(model, input_shape, observation.local, n, config,
                   round_index=observation.round)
    return runner.run(prob, victims, context, key, config.stopping(),
                      chunk_size=min(config.chunk_size, config.max_iters), progress=progress,
                      checkpoint=checkpoint)


def _psnr_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise -PSNR-like cost ``10 log10(MSE)`` of two image sets (n, ...)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    mse = np.mean(np.square(a[:, None] - b[None]), axis=-1)
    return 10.0 * np.log10(np.maximum(mse, 1e-12))


def combine_copies(x: np.ndarray) -> np.ndarray:
    """The ``n`` reconstructions of one victim from its per-epoch copies (E, n, ...):
    every copy matched to copy 0 (Hungarian on PSNR), then averaged."""
    x = np.asarray(x)
    if x.ndim < 5:
        return x
    from scipy.optimize import linear_sum_assignment  # slow to import (~1 s); only here

    matched = [x[0]]
    for e in range(1, x.shape[0]):
        rows, cols = linear_sum_assignment(_psnr_cost(x[0], x[e]))
        matched.append(x[e][cols[np.argsort(rows)]])
    return np.mean(np.stack(matched), axis=0)


__all__ = ["DLFConfig", "clip_prior", "combine_copies", "layer_weights", "order_kernel",
           "order_prior", "problem", "reconstruct", "weighted_l2"]
