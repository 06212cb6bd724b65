"""Generative Regression Neural Network (GRNN).

Ren, Deng, Xie, "GRNN: Generative Regression Neural Network - A Data Leakage Attack
for Federated Learning", ACM TIST 13(4), 2022, as its public code (Rand2AI/GRNN,
``GRNN.py``, ``Generator/model.py``, ``utils.py``) runs it and NotEasy (Zhu, Huang, Xie
2024, section III and Table II) reruns it:

- an *untrained* generator, new for every victim, maps one fixed noise vector per image
  z ~ N(0, 1) (128 entries) to a dummy image, and a linear label head maps the same z
  to a dummy soft label ``softmax(W z + b)``; the generator's and the head's parameters
  (not z) are optimised jointly, so the generator's architecture is the image prior;
- the generator (GRNN's ``Generator/model.py``; ~0.7 M parameters at 32x32x3):
  ``ConvTranspose(128 -> 2 c0, kernel = the base side, 1x1 -> base x base) -> GLU``,
  then up-blocks ``nearest x2 -> Conv3x3(no bias, -> 2 c) -> BatchNorm -> GLU`` with
  the channels halving down to ``width`` (d = 32), a last up-block to the image's
  channels, and a sigmoid: images in [0, 1]. GLU(a, b) = a * sigmoid(b) over the two
  halves of the channels. At 32x32x3 the base is 4x4 and the GLU outputs have
  128 -> 64 -> 32 -> 3 channels (0.71 M parameters with the head,
  :func:`make_generator`); jgi takes the largest number of up-blocks whose base side is
  an integer >= 4 (28x28: 7x7 and two up-blocks, 64 -> 32 -> 1), which is GRNN's rule
  for powers of 2;
- the dummy update is the client's gradient of the cross-entropy of the model's
  prediction on the dummy images against the dummy soft labels
  (:func:`jgi.fl.client_update`, the client's own computation);
- loss: ``sum (g' - g)^2 + |g' - g|_2 + tv_weight * TV2(x')``. The second term is what
  the paper and its code call a Wasserstein distance: ``wasserstein_distance`` in
  ``WassersteinDistance/wd.py`` applied to the flattened gradients viewed as (1, n)
  reduces to ``(sum |g' - g|^2)^(1/2)``, the L2 norm of the difference (NotEasy's port
  applies it to a 1-D vector, where ``[0]`` picks the first entry only: a bug jgi does
  not copy). TV2 is GRNN's ``TVLoss``: ``2 (mean (dx)^2 + mean (dy)^2)``, squared
  differences; tv_weight 1e-3 for LeNet, 1e-6 for ResNet-18 (the code's values);
- RMSprop, lr 1e-4, momentum 0.99 (PyTorch's alpha 0.99, eps 1e-8 added outside the
  square root), 1,000 iterations (NotEasy Table II: lr 0.0001, 1,000 epochs).
  ``optimizer="adam"`` runs Adam instead;
- the client's model: GRNN attacks LeNet (DLG's, U(-0.5, 0.5) init) and ResNet-18.

Normalisation (NotEasy section III, Fig. 17: GRNN's images are "highly sensitive to data
normalization", good on unnormalised data): the generator ends in a sigmoid, so its
images lie in [0, 1]. GRNN's code and NotEasy's port feed them to the model as they are,
which is right only when the client trains on unnormalised data; on normalised data the
generator cannot produce the client's inputs (MNIST's lie in [-0.42, 2.82]).
``reconstruct(..., normalization=(mean, std))`` maps the generated images through the
client's normalisation ``(x - mean) / std`` before the model sees them (the fix);
``normalization=None`` feeds them as they are (GRNN's code). The returned images are
always the generator's, in [0, 1] pixel units.

Choices where the papers are silent, and differences:
- Initialisation: GRNN's ``Generator.weight_init(0, 0.02)`` walks only the top-level
  modules (``Sequential`` / ``ModuleList`` containers, never a ``Conv2d``), so it changes
  nothing and PyTorch's default layer initialisation is what runs; NotEasy's port does
  not call it at all. ``init="pytorch"`` (default) is that; ``init="normal"`` draws every
  weight from N(0, 0.02) with zero biases, what the code meant to do. BatchNorm starts at
  scale 1, shift 0 and always normalises with the batch's own statistics (the generator
  stays in training mode in GRNN's code; at batch 1 the statistics are over the pixels).
- The returned images and labels are the best iterate's (lowest own loss, the runner's
  rule); GRNN's code returns the last.
- ``labels="known"`` skips the label head and uses the caller's labels.
- Everything runs through :mod:`jgi.attacks.runner`: victims vmapped inside each step,
  one generator (and one z) per victim.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jgi.attacks import runner
from jgi.attacks.distances import l2_distance
from jgi.fl.client import ClientRandomness, client_update, num_classes
from jgi.models import layers
from jgi.models.interface import Model, Params

OPTIMIZERS = ("rmsprop", "adam")
LABEL_MODES = ("joint", "known")
INITS = ("pytorch", "normal")
# The generator's convolutions: "patches" (patch extraction + one matmul) or "lax".
CONV_IMPL = "patches"
# GRNN's TV weights per model (GRNN.py): LeNet 1e-3, ResNet-18 1e-6.
TV_WEIGHTS = {"lenet": 1e-3, "resnet18": 1e-6}


@dataclasses.dataclass(frozen=True)
class GRNNConfig:
    """Hyperparameters of GRNN (defaults: GRNN's code and NotEasy's Table II).

    Attributes:
      max_iters: optimisation steps per victim (1,000).
      batch_size: images per victim's update (GRNN's code: 1; NotEasy's FL runs: 10).
      optimizer: "rmsprop" (GRNN's: momentum 0.99, alpha 0.99) or "adam".
      lr: learning rate (1e-4).
      momentum: RMSprop's momentum (0.99).
      tv_weight: weight of the squared-difference TV (LeNet 1e-3; see TV_WEIGHTS).
      norm_weight: weight of the |g' - g|_2 term (GRNN's "Wasserstein" term; 1).
      latent_dim: size of the fixed noise z (128).
      width: channels of the last hidden up-block, GRNN's d (32).
      init: "pytorch" (what GRNN's code runs) or "normal" (N(0, 0.02), zero biases).
      labels: "joint" (GRNN: the label head) or "known" (the caller's labels).
      chunk_size: steps per compiled chunk (host work happens between chunks).
    """

    max_iters: int = 1000
    batch_size: int = 1
    optimizer: str = "rmsprop"
    lr: float = 1e-4
    momentum: float = 0.99
    tv_weight: float = 1e-3
    norm_weight: float = 1.0
    latent_dim: int = 128
    width: int = 32
    init: str = "pytorch"
    labels: str = "joint"
    chunk_size: int = 50

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"GRNNConfig: unknown optimizer {self.optimizer!r}; valid: "
                             f"{', '.join(OPTIMIZERS)} (GRNN's code: rmsprop).")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"GRNNConfig: unknown labels {self.labels!r}; valid: "
                             f"{', '.join(LABEL_MODES)}.")
        if self.init not in INITS:
            raise ValueError(f"GRNNConfig: unknown init {self.init!r}; valid: "
                             f"{', '.join(INITS)}.")
        for name in ("max_iters", "batch_size", "latent_dim", "width", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRNNConfig: {name} must be >= 1, got "
                                 f"{getattr(self, name)}.")
        if not self.lr > 0:
            raise ValueError(f"GRNNConfig: lr must be > 0, got {self.lr} (GRNN: 1e-4).")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"GRNNConfig: momentum must be in [0, 1), got {self.momentum} "
                             "(GRNN: 0.99).")
        for name in ("tv_weight", "norm_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"GRNNConfig: {name} must be >= 0, got "
                                 f"{getattr(self, name)}.")

    def stopping(self) -> runner.StoppingRule:
        """All ``max_iters`` steps (GRNN has no early stop)."""
        return runner.StoppingRule(self.max_iters, -math.inf, self.max_iters + 1)

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.optimizer == "adam":
            return optax.adam(self.lr)
        # PyTorch's RMSprop(lr, momentum): alpha 0.99, eps outside the square root.
        return optax.rmsprop(self.lr, decay=0.99, eps=1e-8, eps_in_sqrt=False,
                             momentum=self.momentum or None)


# --- GRNN's generator --------------------------------------------------------------------


def layout(image_shape: tuple[int, int, int], width: int = 32) -> tuple[int, tuple[int, ...]]:
    """``(base side count, channels)`` of GRNN's generator for ``image_shape``.

    The number of up-blocks is the largest n with H and W divisible by 2**n and
    H / 2**n, W / 2**n >= 4 (GRNN: log2(side) - 2 for a power-of-2 side). ``channels``
    lists the GLU outputs: the first block's, then each up-block's, the last the
    image's channels.
    """
    h, w, c = (int(s) for s in image_shape)
    n_up = 0
    while h % 2 ** (n_up + 1) == 0 and w % 2 ** (n_up + 1) == 0 \
            and h // 2 ** (n_up + 1) >= 4 and w // 2 ** (n_up + 1) >= 4:
        n_up += 1
    if n_up == 0:
        raise ValueError(f"GRNN's generator needs image sides divisible by 2 with a base "
                         f"of at least 4x4 (for example 8, 16, 28, 32), got {h}x{w}.")
    hidden = tuple(width * 2 ** i for i in reversed(range(n_up)))
    return n_up, hidden + (c,)


def _glu(x: jax.Array) -> jax.Array:
    a, b = jnp.split(x, 2, axis=-1)
    return a * jax.nn.sigmoid(b)


def _batch_norm(p: dict, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """BatchNorm2d in training mode: the batch's own statistics over (B, H, W)."""
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.var(x, axis=(0, 1, 2))
    return (x - mean) * lax.rsqrt(var + eps) * p["scale"] + p["shift"]


def make_generator(image_shape: tuple[int, int, int], num_classes: int, latent_dim: int = 128,
              width: int = 32, init: str = "pytorch"):
    """GRNN's generator with its label head, as ``(init_fn, apply_fn)``.

    ``init_fn(key) -> params``; ``apply_fn(params, z)`` maps z (B, latent_dim) to
    ``(images (B, H, W, C) in [0, 1], soft labels (B, num_classes))``.
    """
    if init not in INITS:
        raise ValueError(f"GRNN generator: unknown init {init!r}; valid: {', '.join(INITS)}.")
    h, w, _ = (int(s) for s in image_shape)
    n_up, chans = layout(image_shape, width)
    h0, w0 = h // 2 ** n_up, w // 2 ** n_up

    def init_fn(key):
        keys = jax.random.split(key, n_up + 2)
        head = layers.dense_init(keys[0], latent_dim, num_classes)
        # ConvTranspose2d(latent, 2 c0, (h0, w0)) on a 1x1 input; PyTorch's default bound
        # reads fan_in from the weight's dim 1 (its output channels) times the kernel.
        bound = 1.0 / math.sqrt(2 * chans[0] * h0 * w0)
        kw, kb = jax.random.split(keys[1])
        first = {"w": jax.random.uniform(kw, (latent_dim, h0, w0, 2 * chans[0]), jnp.float32,
                                         -bound, bound),
                 "b": jax.random.uniform(kb, (2 * chans[0],), jnp.float32, -bound, bound)}
        params = {"head": head, "first": first}
        for i in range(n_up):
            params[f"up{i}"] = {
                "conv": layers.conv_init(keys[i + 2], 3, chans[i], 2 * chans[i + 1], bias=False),
                "bn": {"scale": jnp.ones((2 * chans[i + 1],), jnp.float32),
                       "shift": jnp.zeros((2 * chans[i + 1],), jnp.float32)}}
        if init == "normal":  # N(0, 0.02) weights, zero biases (GRNN's intended init)
            def redraw(path, leaf, k):
                names = [getattr(p, "key", None) for p in path]
                if "bn" in names:
                    return leaf
                if names[-1] == "b":
                    return jnp.zeros_like(leaf)
                return 0.02 * jax.random.normal(k, leaf.shape, leaf.dtype)
            leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
            ks = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
            params = jax.tree_util.tree_unflatten(
                treedef, [redraw(p, leaf, k) for (p, leaf), k in zip(leaves, ks, strict=True)])
        return params

    def apply_fn(params, z):
        if z.ndim != 2 or z.shape[1] != latent_dim:
            raise ValueError(f"GRNN generator: z must have shape (batch, {latent_dim}), got "
                             f"{z.shape}.")
        soft = jax.nn.softmax(layers.dense(params["head"], z, name="grnn.head"), axis=-1)
        x = jnp.einsum("bl,lhwc->bhwc", z, params["first"]["w"]) + params["first"]["b"]
        x = _glu(x)
        for i in range(n_up):
            p = params[f"up{i}"]
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest x2
            x = layers.conv(p["conv"], x, stride=1, padding="SAME", impl=CONV_IMPL,
                            name=f"grnn.up{i}")
            x = _glu(_batch_norm(p["bn"], x))
        return jax.nn.sigmoid(x), soft

    return init_fn, apply_fn


# --- the attack --------------------------------------------------------------------------


def squared_tv(x: jax.Array) -> jax.Array:
    """GRNN's ``TVLoss`` of a batch (B, H, W, C): ``2 (mean dy^2 + mean dx^2)``."""
    dy = jnp.mean(jnp.square(x[:, 1:] - x[:, :-1]))
    dx = jnp.mean(jnp.square(x[:, :, 1:] - x[:, :, :-1]))
    return 2.0 * (dy + dx)


def gradient_loss(dummy: Any, target: Any, config: GRNNConfig) -> tuple[jax.Array, dict]:
    """``sum (g' - g)^2 + norm_weight |g' - g|_2`` and its two parts."""
    l2 = l2_distance(dummy, target)
    norm = jnp.sqrt(l2 + 1e-20)  # GRNN's "Wasserstein" term (see the module docstring)
    return l2 + config.norm_weight * norm, {"l2": l2, "norm": norm}


def problem(model: Model, input_shape: tuple[int, int, int], n_classes: int,
            config: GRNNConfig = GRNNConfig()) -> runner.Problem:
    """GRNN as a :class:`~jgi.attacks.runner.Problem`.

    Candidate: ``{"gen": generator and label-head params}``. Victim data: ``{"target":
    observed update, "z": (B, latent) fixed noise}`` plus ``"label": (B,)`` for known
    labels. Context: ``{"params": model params, "mean": ..., "std": ...}``: the generated
    images are mapped through ``(x - mean) / std`` before the model (mean 0, std 1 for
    none).
    """
    init_fn, apply_fn = make_generator(input_shape, n_classes, config.latent_dim, config.width,
                                  config.init)
    input_shape = tuple(input_shape)

    def init(key, victim, context):
        del victim, context
        return {"gen": init_fn(key)}

    def objective(candidate, victim, context, key):
        x, soft = apply_fn(candidate["gen"], victim["z"])
        y = victim["label"] if config.labels == "known" else soft
        noise = model.sample_noise(key, input_shape, config.batch_size)
        xm = (x - context["mean"]) / context["std"]
        update = client_update(model, context["params"], xm, y, ClientRandomness(model=noise))
        distance, parts = gradient_loss(update, victim["target"], config)
        tv = squared_tv(x)
        return distance + config.tv_weight * tv, {**parts, "tv": tv}

    return runner.Problem(init=init, objective=objective, optimizer=config.make_optimizer(),
                          project=lambda c, v, ctx: c)


class GRNNResult(NamedTuple):
    """What GRNN returns, per victim (leading axis V).

    Attributes:
      images: the generated images (V, B, H, W, C) in [0, 1] pixel units.
      labels: (V, B): argmax of the label head's soft labels, or the known labels.
      soft_labels: the label head's soft labels (V, B, classes).
      loss: the objective at the returned images (V,).
      attack: the runner's :class:`~jgi.attacks.runner.AttackResult`.
    """

    images: np.ndarray
    labels: np.ndarray
    soft_labels: np.ndarray
    loss: np.ndarray
    attack: runner.AttackResult


def normalization_context(normalization, channels: int) -> dict:
    """``{"mean", "std"}`` arrays for the context (identity for None)."""
    if normalization is None:
        return {"mean": jnp.zeros((channels,), jnp.float32),
                "std": jnp.ones((channels,), jnp.float32)}
    mean, std = (jnp.broadcast_to(jnp.asarray(a, jnp.float32), (channels,))
                 for a in normalization)
    if not bool(jnp.all(std > 0)):
        raise ValueError(f"normalization: every std must be > 0, got {std}.")
    return {"mean": mean, "std": std}


def reconstruct(model: Model, params: Params, updates: Any, key: jax.Array,
                config: GRNNConfig = GRNNConfig(), *, input_shape: tuple[int, int, int],
                generator: Any = None, labels: jax.Array | None = None,
                normalization=None, progress: bool | str = True,
                checkpoint=None) -> GRNNResult:
    """Inverts every victim's update with GRNN, all victims in parallel.

    Args:
      model: the attacked model (GRNN's: ``models.get("lenet")``).
      params: the parameters the clients computed their updates with.
      updates: observed updates, every leaf with a leading victim axis (or one update).
      key: PRNG key: each victim's generator initialisation and its fixed noise z.
      config: :class:`GRNNConfig`.
      input_shape: (H, W, C) of one input.
      generator: must be None: GRNN trains its own untrained generator (the argument
        exists for the shared ``reconstruct`` signature of the generative attacks).
      labels: with ``config.labels == "known"``, the labels (V,) or (V, B).
      normalization: the client's input normalisation ``(mean, std)`` (per channel, in
        [0, 1] units) that the generated images go through, or None to feed them as they
        are (GRNN's code; right for unnormalised data).
      progress: show a progress bar (a string is its description).
      checkpoint: optional :class:`~jgi.checkpointing.AttackCheckpoint`.

    Returns:
      :class:`GRNNResult`.
    """
    if generator is not None:
        raise ValueError("GRNN optimises an untrained generator of its own shape; it takes "
                         "no trained generator (pass generator=None; GIAS and GGL use one).")
    input_shape = tuple(int(s) for s in input_shape)
    layout(input_shape, config.width)  # fails early on an unsupported shape
    updates = runner.with_victim_axis(updates, params)
    n_victims = jax.tree.leaves(updates)[0].shape[0]
    k_z, k_run = jax.random.split(key)
    z = jax.random.normal(k_z, (n_victims, config.batch_size, config.latent_dim), jnp.float32)
    victims = {"target": updates, "z": z}
    if config.labels == "known":
        if labels is None:
            raise ValueError("GRNNConfig(labels='known') needs labels= (V,) or (V, batch).")
        labels = jnp.asarray(labels, jnp.int32).reshape(n_victims, -1)
        if labels.shape[1] != config.batch_size:
            raise ValueError(f"labels give {labels.shape[1]} per victim, the config "
                             f"reconstructs batch_size={config.batch_size}.")
        victims["label"] = labels
    n_classes = num_classes(model, params)
    context = {"params": params, **normalization_context(normalization, input_shape[2])}
    result = runner.run(problem(model, input_shape, n_classes, config), victims, context,
                        k_run, config.stopping(), chunk_size=min(config.chunk_size,
                                                                 config.max_iters),
                        progress=progress, checkpoint=checkpoint)
    _, apply_fn = make_generator(input_shape, n_classes, config.latent_dim, config.width,
                                 config.init)
    images, soft = jax.jit(jax.vmap(apply_fn))(result.best["gen"], z)
    soft = np.asarray(soft)
    out_labels = (np.asarray(victims["label"]) if config.labels == "known"
                  else soft.argmax(-1).astype(np.int32))
    return GRNNResult(images=np.asarray(images), labels=out_labels, soft_labels=soft,
                      loss=np.asarray(result.best_loss), attack=result)


__all__ = ["GRNNConfig", "GRNNResult", "INITS", "LABEL_MODES", "OPTIMIZERS", "TV_WEIGHTS",
           "gradient_loss", "layout", "make_generator", "normalization_context", "problem",
           "reconstruct", "squared_tv"]
