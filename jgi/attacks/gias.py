"""Gradient Inversion in Alternative Spaces (GIAS): a trained generator as the image prior.

Jeon, Kim, Lee, Oh, Ok, "Gradient Inversion with Generative Image Prior", NeurIPS 2021,
as its public code runs it (ml-postech/gradient-inversion-generative-image-prior,
``inversefed/reconstruction_algorithms.py`` and ``scripts/ours_v2_bs4.sh``, the batch-4
script; the code builds on Geiping et al.'s ``inversefed``):

1. **latent search**: ``restarts`` (3) latent codes per victim, each a batch of
   ``batch_size`` (4) z ~ N(0, 1), optimised with Adam (lr 3e-2, 500 iterations at
   32x32) against the cost below through the *fixed* trained generator; the restart
   with the lowest cost is kept;
2. **generator-parameter search**: from that z, a copy of the generator's parameters
   *per image* of the batch is optimised with Adam (lr 1e-3, 5,000 iterations at 32x32),
   z fixed. The per-image copies (``per_image_generator``, the code's ``G_list2d``) let
   each image leave the generator's range on its own;
- cost: the cosine distance between the dummy update and the observed one over all
  layers, equal weights (``cost_fn="sim"``, :func:`jgi.attacks.distances.cosine_distance`),
  plus ``tv_weight`` (1e-6) times the total variation of the dummy batch in the model's
  input space (``inversefed``'s TV: mean absolute differences, the batch's mean), no
  BatchNorm-statistics or other prior (``bn_stat=0, image_norm=0, group_lazy=0``);
- both phases: learning rate x0.1 at 3/8, 5/8 and 7/8 of their iterations (PyTorch's
  ``MultiStepLR(milestones=[n // 2.667, n // 1.6, n // 1.142], gamma=0.1)``), unsigned
  gradients (``--unsigned``);
- the generator's output (jgi's generators: [0, 1]) is mapped through the client's
  normalisation ``(x - mean) / std`` before the model sees it (``gen_dummy_data``);
- labels: the experiments pass the true labels (``labels="known"``); without them the
  code optimises soft labels with the dummies (DLG's label recovery), which
  ``labels="joint"`` does in the latent phase (the chosen restart's soft labels are then
  fixed for the parameter phase).

Choices where the paper and code are silent or where jgi differs:
- The code runs ``restarts`` copies of phase 2 as well, but every copy starts from the
  same z and the same generator and nothing in it is random for a DCGAN-like generator,
  so they are identical: jgi runs phase 2 once per victim.
- The code clamps the generated batch into the valid box after every step; the
  generator's next output overwrites it, so the clamp changes nothing and jgi has none.
- Each phase returns its best iterate (lowest own cost, the runner's rule); the code
  takes the last and scores it afterwards.
- The paper's generators (DCGAN, StyleGAN2 on ImageNet/FFHQ) are not available offline;
  jgi trains its own (:mod:`jgi.models.generator`, ``experiments.train_generator``) and
  GIAS takes any ``(spec, params)`` of it, or any ``(apply_fn, params)`` with
  ``apply_fn(params, z (B, latent)) -> images (B, H, W, C) in [0, 1]``.

Both phases run through :mod:`jgi.attacks.runner`: victims (times restarts, in phase 1)
vmapped inside each step. ``GIASConfig(param_loop=True)`` runs phase 2 one victim at a
time instead (:func:`jgi.attacks.runner.run_looped`: the runner's chunk compiled
once for one victim and called per victim), which is faster on CPU: vmapping over
victims whose generator copies each have their own weights turns every convolution
into a grouped one, which XLA's CPU backend runs slowly
(``benchmarks/grnn_gias_throughput.py``: 1.76 victim-steps/s vmapped against 4.95
looped on 2 shared cores; ``docs/results/grnn-gias.md``). The results are
the vmapped run's up to float rounding: the same initial state and keys per victim.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi.attacks import runner
from jgi.attacks.distances import DISTANCES
from jgi.attacks.grnn import normalization_context
from jgi.attacks.regularizers import total_variation
from jgi.fl.client import ClientRandomness, client_update, num_classes
from jgi.models.interface import Model, Params

LABEL_MODES = ("known", "joint")


@dataclasses.dataclass(frozen=True)
class GIASConfig:
    """Hyperparameters of GIAS (defaults: the code's batch-4 script at 32x32).

    Attributes:
      latent_iters: Adam iterations of the latent search (500).
      param_iters: Adam iterations of the generator-parameter search (5,000).
      latent_lr: the latent search's learning rate (3e-2).
      param_lr: the parameter search's learning rate (1e-3).
      restarts: latent codes tried per victim (3).
      batch_size: images per victim's update (4).
      tv_weight: weight of the total variation (1e-6).
      distance: "cosine" (GIAS's ``sim``) or "l2".
      lr_decay: x0.1 at 3/8, 5/8 and 7/8 of each phase (True).
      per_image_generator: one generator copy per image in phase 2 (True, the code's).
      labels: "known" (the caller's) or "joint" (soft labels optimised in phase 1).
      chunk_size: steps per compiled chunk (host work happens between chunks).
      param_loop: run phase 2 one victim at a time (:func:`runner.run_looped`) instead of
        vmapped over victims (False): faster on CPU, the same results.
    """

    latent_iters: int = 500
    param_iters: int = 5000
    latent_lr: float = 3e-2
    param_lr: float = 1e-3
    restarts: int = 3
    batch_size: int = 4
    tv_weight: float = 1e-6
    distance: str = "cosine"
    lr_decay: bool = True
    per_image_generator: bool = True
    labels: str = "known"
    chunk_size: int = 50
    param_loop: bool = False

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"GIASConfig: unknown distance {self.distance!r}; valid: "
                             f"{', '.join(DISTANCES)} (GIAS: cosine).")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"GIASConfig: unknown labels {self.labels!r}; valid: "
                             f"{', '.join(LABEL_MODES)}.")
        for name in ("latent_iters", "restarts", "batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GIASConfig: {name} must be >= 1, got "
                                 f"{getattr(self, name)}.")
        if self.param_iters < 0:
            raise ValueError(f"GIASConfig: param_iters must be >= 0 (0 skips the parameter "
                             f"search), got {self.param_iters}.")
        for name in ("latent_lr", "param_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GIASConfig: {name} must be > 0, got {getattr(self, name)} "
                                 "(GIAS: latent 3e-2, parameters 1e-3).")
        if self.tv_weight < 0:
            raise ValueError(f"GIASConfig: tv_weight must be >= 0, got {self.tv_weight}.")

    def optimizer(self, lr: float, iters: int) -> optax.GradientTransformation:
        """Adam with GIAS's step decay (x0.1 at 3/8, 5/8, 7/8 of ``iters``)."""
        if not self.lr_decay:
            return optax.adam(lr)
        marks = [int(iters // f) for f in (2.667, 1.6, 1.142)]
        schedule = optax.piecewise_constant_schedule(lr, {m: 0.1 for m in marks if m > 0})
        return optax.adam(schedule)

    @staticmethod
    def stopping(iters: int) -> runner.StoppingRule:
        return runner.StoppingRule(iters, -math.inf, iters + 1)


GeneratorApply = Callable[[Any, jax.Array], jax.Array]


def batch_cost(model: Model, config: GIASConfig, x: jax.Array, y: jax.Array, target: Any,
               context: dict, key: jax.Array, input_shape) -> tuple[jax.Array, dict]:
    """GIAS's cost of a generated batch ``x`` (B, H, W, C) in [0, 1]: distance + TV."""
    xm = (x - context["mean"]) / context["std"]
    noise = model.sample_noise(key, tuple(input_shape), x.shape[0])
    update = client_update(model, context["params"], xm, y, ClientRandomness(model=noise))
    distance = DISTANCES[config.distance](update, target)
    tv = jnp.mean(jax.vmap(total_variation)(xm))
    return distance + config.tv_weight * tv, {"distance": distance, "tv": tv}


def latent_problem(model: Model, gen_apply: GeneratorApply, latent_dim: int,
                   input_shape: tuple[int, int, int], n_classes: int,
                   config: GIASConfig = GIASConfig()) -> runner.Problem:
    """Phase 1 (latent search) as a :class:`~jgi.attacks.runner.Problem`.

    Candidate: ``{"z": (B, latent)}`` plus ``"label_logits": (B, classes)`` for joint
    labels. Victim data: ``{"target": observed update}`` plus ``"label": (B,)`` for known
    labels. Context: ``{"params", "gen": generator params, "mean", "std"}``.
    """
    joint = config.labels == "joint"
    b = config.batch_size

    def init(key, victim, context):
        del victim, context
        k_z, k_y = jax.random.split(key)
        candidate = {"z": jax.random.normal(k_z, (b, latent_dim), jnp.float32)}
        if joint:
            candidate["label_logits"] = jax.random.normal(k_y, (b, n_classes), jnp.float32)
        return candidate

    def objective(candidate, victim, context, key):
        x = gen_apply(context["gen"], candidate["z"])
        y = (jax.nn.softmax(candidate["label_logits"], -1) if joint else victim["label"])
        return batch_cost(model, config, x, y, victim["target"], context, key, input_shape)

    return runner.Problem(init=init, objective=objective,
                          optimizer=config.optimizer(config.latent_lr, config.latent_iters),
                          project=lambda c, v, ctx: c)


def generate_per_image(gen_apply: GeneratorApply, gen_params: Any, z: jax.Array) -> jax.Array:
    """Images (B, H, W, C) from per-image generator copies (leading B axis) and z (B, L)."""
    return jax.vmap(lambda p, zi: gen_apply(p, zi[None])[0])(gen_params, z)


def param_problem(model: Model, gen_apply: GeneratorApply,
                  input_shape: tuple[int, int, int],
                  config: GIASConfig = GIASConfig()) -> runner.Problem:
    """Phase 2 (generator-parameter search) as a :class:`~jgi.attacks.runner.Problem`.

    Candidate: ``{"gen": generator params}``, with a leading batch axis (one copy per
    image) when ``config.per_image_generator``; initialised from ``context["gen"]``.
    Victim data: ``{"target", "label": (B,) int or (B, classes) soft, "z": (B, latent)}``.
    """
    b = config.batch_size

    def init(key, victim, context):
        del key, victim
        if config.per_image_generator:
            return {"gen": jax.tree.map(lambda a: jnp.broadcast_to(a, (b, *a.shape)),
                                        context["gen"])}
        return {"gen": context["gen"]}

    def objective(candidate, victim, context, key):
        if config.per_image_generator:
            x = generate_per_image(gen_apply, candidate["gen"], victim["z"])
        else:
            x = gen_apply(candidate["gen"], victim["z"])
        return batch_cost(model, config, x, victim["label"], victim["target"], context, key,
                          input_shape)

    return runner.Problem(init=init, objective=objective,
                          optimizer=config.optimizer(config.param_lr,
                                                     max(config.param_iters, 1)),
                          project=lambda c, v, ctx: c)


class GIASResult(NamedTuple):
    """What GIAS returns, per victim (leading axis V).

    Attributes:
      images: the reconstructions after both phases (V, B, H, W, C) in [0, 1].
      labels: (V, B) int: the known labels, or the argmax of the soft labels.
      loss: the cost at ``images`` (V,) (the latent phase's when ``param_iters`` is 0).
      latent_images: the generator's images at the chosen z, after phase 1.
      latent_loss: the chosen restart's cost after phase 1 (V,); phase 2 starts there.
      restart_losses: every restart's phase-1 cost (V, restarts).
      z: the chosen latent codes (V, B, latent).
      latent_attack, attack: the runner's results of the two phases (``attack`` None
        when ``param_iters`` is 0).
    """

    images: np.ndarray
    labels: np.ndarray
    loss: np.ndarray
    latent_images: np.ndarray
    latent_loss: np.ndarray
    restart_losses: np.ndarray
    z: np.ndarray
    latent_attack: runner.AttackResult
    attack: runner.AttackResult | None


def resolve_generator(generator: Any) -> tuple[GeneratorApply, Any, int]:
    """``(apply_fn, params, latent_dim)`` from what :func:`reconstruct` accepts.

    ``generator`` is a name or path for :func:`jgi.models.generator.load_generator`, a
    ``(GeneratorSpec, params)`` pair as it returns, or ``(apply_fn, params)``.
    """
    if generator is None:
        raise ValueError("GIAS needs a trained generator: generator='mnist' (shipped), a "
                         "path, or (spec, params) from jgi.models.generator.load_generator.")
    if isinstance(generator, str) or hasattr(generator, "__fspath__"):
        from jgi.models.generator import load_generator  # pylint: disable=g-import-not-at-top
        generator = load_generator(generator)
    first, params = generator
    if not callable(first):  # a GeneratorSpec
        from jgi.models.generator import generator as build  # pylint: disable=g-import-not-at-top
        return build(first)[1], params, int(first.latent_dim)
    dense = params.get("dense", {}).get("w") if isinstance(params, dict) else None
    if dense is None:
        raise ValueError("resolve_generator: with (apply_fn, params), params['dense']['w'] "
                         "(latent, ...) must give the latent size; pass (spec, params).")
    return first, params, int(dense.shape[0])


def reconstruct(model: Model, params: Params, updates: Any, key: jax.Array,
                config: GIASConfig = GIASConfig(), *, input_shape: tuple[int, int, int],
                generator: Any = None, labels: jax.Array | None = None,
                normalization=None, progress: bool | str = True) -> GIASResult:
    """Inverts every victim's update with GIAS, all victims in parallel.

    Args:
      model: the attacked model.
      params: the parameters the clients computed their updates with.
      updates: observed updates, every leaf with a leading victim axis (or one update).
      key: PRNG key (phase 1's latent codes: ``jax.random.split(key)[0]`` goes to the
        runner, whose victims are the victims repeated ``restarts`` times).
      config: :class:`GIASConfig`.
      input_shape: (H, W, C) of one input (the generator's image shape).
      generator: the trained generator (see :func:`resolve_generator`).
      labels: with ``config.labels == "known"``, the labels (V, B) (or (V,) at batch 1).
      normalization: the client's input normalisation ``(mean, std)`` in [0, 1] units,
        or None when the model sees [0, 1] images.
      progress: show progress bars (a string is their description's prefix).

    Returns:
      :class:`GIASResult`.
    """
    gen_apply, gen_params, latent_dim = resolve_generator(generator)
    input_shape = tuple(int(s) for s in input_shape)
    out_shape = jax.eval_shape(gen_apply, gen_params,
                               jax.ShapeDtypeStruct((1, latent_dim), jnp.float32)).shape
    if tuple(out_shape[1:]) != input_shape:
        raise ValueError(f"The generator makes images of shape {tuple(out_shape[1:])}, the "
                         f"attack reconstructs input_shape={input_shape}: use a generator "
                         "trained on this data domain.")
    updates = runner.with_victim_axis(updates, params)
    n_victims = jax.tree.leaves(updates)[0].shape[0]
    r, b = config.restarts, config.batch_size
    victims = {"target": updates}
    if config.labels == "known":
        if labels is None:
            raise ValueError("GIASConfig(labels='known') needs labels= (V, batch); or use "
                             "GIASConfig(labels='joint') to optimise soft labels.")
        labels = jnp.asarray(labels, jnp.int32).reshape(n_victims, -1)
        if labels.shape[1] != b:
            raise ValueError(f"labels give {labels.shape[1]} per victim, the config "
                             f"reconstructs batch_size={b}.")
        victims["label"] = labels
    n_classes = num_classes(model, params)
    context = {"params": params, "gen": gen_params,
               **normalization_context(normalization, input_shape[2])}
    prefix = progress if isinstance(progress, str) else "gias"
    k_latent, k_param = jax.random.split(key)

    # Phase 1: every victim repeated ``restarts`` times (v0r0, v0r1, ..., v1r0, ...).
    repeated = jax.tree.map(lambda a: jnp.repeat(a, r, axis=0), victims)
    latent = runner.run(latent_problem(model, gen_apply, latent_dim, input_shape, n_classes,
                                       config),
                        repeated, context, k_latent, config.stopping(config.latent_iters),
                        chunk_size=min(config.chunk_size, config.latent_iters),
                        progress=f"{prefix} latent" if progress else False)
    restart_losses = np.asarray(latent.best_loss).reshape(n_victims, r)
    pick = np.arange(n_victims) * r + restart_losses.argmin(1)
    z = jnp.asarray(latent.best["z"][pick])
    if config.labels == "joint":
        soft = jax.nn.softmax(jnp.asarray(latent.best["label_logits"][pick]), -1)
        victims["label"] = soft
        out_labels = np.asarray(soft).argmax(-1).astype(np.int32)
    else:
        out_labels = np.asarray(victims["label"])
    latent_images = np.asarray(jax.jit(jax.vmap(gen_apply, in_axes=(None, 0)))(gen_params, z))
    latent_loss = restart_losses.min(1)
    if config.param_iters == 0:
        return GIASResult(latent_images, out_labels, latent_loss, latent_images, latent_loss,
                          restart_losses, np.asarray(z), latent, None)

    # Phase 2: the generator's parameters (one copy per image) from the chosen z.
    victims["z"] = z
    run = runner.run_looped if config.param_loop else runner.run
    attack = run(param_problem(model, gen_apply, input_shape, config), victims,
                 context, k_param, config.stopping(config.param_iters),
                 chunk_size=min(config.chunk_size, config.param_iters),
                 progress=f"{prefix} generator" if progress else False)
    if config.per_image_generator:
        images = jax.jit(jax.vmap(lambda p, zz: generate_per_image(gen_apply, p, zz)))(
            attack.best["gen"], z)
    else:
        images = jax.jit(jax.vmap(gen_apply))(attack.best["gen"], z)
    return GIASResult(np.asarray(images), out_labels, np.asarray(attack.best_loss),
                      latent_images, latent_loss, restart_losses, np.asarray(z), latent,
                      attack)


__all__ = ["GIASConfig", "GIASResult", "LABEL_MODES", "batch_cost", "generate_per_image",
           "latent_problem", "param_problem", "reconstruct", "resolve_generator"]
