"""WGAN-GP generators and critics for the generative-prior attacks (GGL, GIAS, GRNN).

GGL (Li, Zhang, Liu, Liu, "Auditing privacy defenses in federated learning via
generative gradient leakage", CVPR 2022) searches the latent space of a generator
trained on the data domain: a WGAN-GP (Gulrajani et al., "Improved training of
Wasserstein GANs", NeurIPS 2017) generator with a 128-dimensional latent and about 1.7 M
parameters (NotEasy, Zhu, Huang, Xie 2024, section 2 of ``BREADTH.md``). Its public code
ships no weights, and nothing may be downloaded at run time, so jgi trains its own
(``python -m experiments.train_generator``) and ships a small MNIST one.

Shapes (``H0 = H / 2**n_up``; every up-sampling doubles the side):

- generator: ``z (B, latent) -> Dense(latent, H0*H0*m*width) -> norm -> ReLU ->
  [ConvTranspose(k, stride 2) -> norm -> ReLU] ... -> ConvTranspose(k, stride 2, C) ->
  (tanh + 1) / 2``, i.e. images in [0, 1]. 32x32x3: H0 = 4, channels 4w -> 2w -> w -> 3
  (GGL's shape: with w = 128 and kernel 2 that is 1.71 M parameters, the count the
  papers give). 28x28x1: H0 = 7, channels 2w -> w -> 1.
- critic: ``[Conv(k, stride 2) -> LeakyReLU(0.2)] ... -> Dense(., 1)``, the mirror
  image, with no normalisation (the gradient penalty is per sample, so WGAN-GP's critic
  must not use BatchNorm; Gulrajani et al. section 4).

Choice where the papers are silent or where jgi differs: the original generator uses
BatchNorm, whose running statistics would make the generator stateful. jgi's uses a
per-sample layer normalisation (over H, W, C, learnable scale and shift; ``norm="layer"``)
or none, so ``apply(params, z)`` is a pure function of one latent at a time, which is
what a latent search evaluates.

Parameters are plain dicts of arrays, like every jgi model. Initialisation is PyTorch's
default (:mod:`jgi.models.layers`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from jgi.models import layers

NORMS = ("layer", "none")
IMAGE_SHAPES = ((28, 28, 1), (32, 32, 3))

InitFn = Callable[[jax.Array], Any]
ApplyFn = Callable[[Any, jax.Array], jax.Array]

WEIGHTS_DIR = Path(__file__).parent / "weights"
# Shipped weights: name -> (file under WEIGHTS_DIR, sha256 of the file). The checksum is
# checked at every load; a mismatch is refused.
SHIPPED: dict[str, tuple[str, str]] = {
    # python -m experiments.train_generator --dataset=mnist --width=16 --steps=1250
    # (2-core shared CPU, ~36 min; docs/results/generative.md has its quality check).
    "mnist": ("generator_mnist.msgpack",
              "eb1bf607aeec5581b9dd0269911beaf88820481f988e0b28a8d49bb76376a20d"),
}


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """Shape of a generator and its critic.

    Attributes:
      image_shape: (H, W, C) of the generated images; (28, 28, 1) or (32, 32, 3).
      latent_dim: size of the latent z (GGL: 128).
      width: channels of the last hidden deconvolution (the first has 2x (28x28) or 4x
        (32x32) as many); GGL's 32x32 generator: 128.
      kernel_size: side of the (transposed) convolution kernels; GGL's generator: 2.
      norm: "layer" (per-sample layer normalisation in the generator) or "none".
    """

    image_shape: tuple[int, int, int]
    latent_dim: int = 128
    width: int = 32
    kernel_size: int = 4
    norm: str = "layer"

    def __post_init__(self):
        shape = tuple(int(s) for s in self.image_shape)
        object.__setattr__(self, "image_shape", shape)
        if shape not in IMAGE_SHAPES:
            raise ValueError(f"GeneratorSpec: image_shape {shape} is not supported; valid: "
                             f"{', '.join(map(str, IMAGE_SHAPES))} (MNIST, CIFAR-10).")
        if self.latent_dim < 1:
            raise ValueError(f"GeneratorSpec: latent_dim must be >= 1, got {self.latent_dim} "
                             "(GGL uses 128).")
        if self.width < 1:
            raise ValueError(f"GeneratorSpec: width must be >= 1, got {self.width}.")
        if self.kernel_size < 2:
            raise ValueError(f"GeneratorSpec: kernel_size must be >= 2 (a stride-2 "
                             f"deconvolution needs it), got {self.kernel_size}.")
        if self.norm not in NORMS:
            raise ValueError(f"GeneratorSpec: unknown norm {self.norm!r}; valid: "
                             f"{', '.join(NORMS)}.")

    @property
    def num_up(self) -> int:
        """Number of stride-2 up-samplings (2 for 28x28, 3 for 32x32)."""
        return 2 if self.image_shape[0] == 28 else 3

    @property
    def base_side(self) -> int:
        return self.image_shape[0] // 2 ** self.num_up

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels after the dense layer and after each deconvolution."""
        hidden = tuple(self.width * 2 ** i for i in reversed(range(self.num_up)))
        return hidden + (self.image_shape[2],)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorSpec":
        d = dict(d)
        d["image_shape"] = tuple(int(s) for s in d["image_shape"])
        for k in ("latent_dim", "width", "kernel_size"):
            if k in d:
                d[k] = int(d[k])
        if "norm" in d and isinstance(d["norm"], bytes):
            d["norm"] = d["norm"].decode()
        return cls(**d)


def spec_for(dataset: str, **overrides: Any) -> GeneratorSpec:
    """The default spec per dataset.

    "cifar10": GGL's shape (latent 128, width 128, kernel 2: 1.71 M parameters).
    "mnist": the smaller one jgi trains on CPU (latent 128, width 32, kernel 4).
    """
    presets = {"mnist": dict(image_shape=(28, 28, 1), width=32, kernel_size=4),
               "cifar10": dict(image_shape=(32, 32, 3), width=128, kernel_size=2)}
    if dataset not in presets:
        raise ValueError(f"spec_for: unknown dataset {dataset!r}; valid: "
                         f"{', '.join(presets)}.")
    return GeneratorSpec(**{**presets[dataset], **overrides})


def _deconv_init(key, k, cin, cout):
    # PyTorch's ConvTranspose2d default: bound 1/sqrt(fan_in) with fan_in = cout * k * k
    # (its weight is stored (in, out, k, k) and kaiming reads dim 1 as fan_in).
    bound = 1.0 / math.sqrt(cout * k * k)
    kw, kb = jax.random.split(key)
    return {"w": jax.random.uniform(kw, (k, k, cin, cout), jnp.float32, -bound, bound),
            "b": jax.random.uniform(kb, (cout,), jnp.float32, -bound, bound)}


def _deconv(p, x):
    y = lax.conv_transpose(x, p["w"], strides=(2, 2), padding="SAME",
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["b"]


def _norm_init(channels):
    return {"scale": jnp.ones((channels,), jnp.float32),
            "shift": jnp.zeros((channels,), jnp.float32)}


def _layer_norm(p, x, eps=1e-5):
    axes = tuple(range(1, x.ndim))
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.var(x, axes, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p["scale"] + p["shift"]


def generator(spec: GeneratorSpec) -> tuple[InitFn, ApplyFn]:
    """The generator of ``spec`` as ``(init_fn, apply_fn)``.

    ``init_fn(key) -> params``; ``apply_fn(params, z)`` maps ``z`` of shape
    (B, latent_dim) to images (B, H, W, C) in [0, 1].
    """
    chans = spec.channels
    side = spec.base_side
    k = spec.kernel_size

    def init(key):
        keys = jax.random.split(key, len(chans))
        params = {"dense": layers.dense_init(keys[0], spec.latent_dim, side * side * chans[0])}
        if spec.norm == "layer":
            params["norm0"] = _norm_init(chans[0])
        for i in range(1, len(chans)):
            params[f"deconv{i}"] = _deconv_init(keys[i], k, chans[i - 1], chans[i])
            if spec.norm == "layer" and i < len(chans) - 1:
                params[f"norm{i}"] = _norm_init(chans[i])
        return params

    def apply(params, z):
        if z.ndim != 2 or z.shape[1] != spec.latent_dim:
            raise ValueError(f"generator: z must have shape (batch, {spec.latent_dim}), "
                             f"got {z.shape}.")
        x = layers.dense(params["dense"], z, name="generator.dense")
        x = x.reshape(z.shape[0], side, side, chans[0])
        if spec.norm == "layer":
            x = _layer_norm(params["norm0"], x)
        x = jax.nn.relu(x)
        for i in range(1, len(chans)):
            x = _deconv(params[f"deconv{i}"], x)
            if i < len(chans) - 1:
                if spec.norm == "layer":
                    x = _layer_norm(params[f"norm{i}"], x)
                x = jax.nn.relu(x)
        return (jnp.tanh(x) + 1.0) / 2.0

    return init, apply


def critic(spec: GeneratorSpec) -> tuple[InitFn, ApplyFn]:
    """The WGAN-GP critic of ``spec`` as ``(init_fn, apply_fn)``.

    ``apply_fn(params, x)`` maps images (B, H, W, C) in [0, 1] to scores (B,). No
    normalisation layers (the gradient penalty is taken per sample).
    """
    chans = tuple(reversed(spec.channels))  # C -> w -> ... -> widest
    k = spec.kernel_size
    side = spec.base_side

    def init(key):
        keys = jax.random.split(key, len(chans))
        params = {f"conv{i}": layers.conv_init(keys[i - 1], k, chans[i - 1], chans[i])
                  for i in range(1, len(chans))}
        params["dense"] = layers.dense_init(keys[-1], side * side * chans[-1], 1)
        return params

    def apply(params, x):
        if x.ndim != 4 or tuple(x.shape[1:]) != spec.image_shape:
            raise ValueError(f"critic: x must have shape (batch, *{spec.image_shape}), "
                             f"got {x.shape}.")
        h = x * 2.0 - 1.0
        for i in range(1, len(chans)):
            h = layers.conv(params[f"conv{i}"], h, stride=2, padding="SAME", impl="patches")
            h = jax.nn.leaky_relu(h, 0.2)
        h = h.reshape(h.shape[0], -1)
        return layers.dense(params["dense"], h, name="critic.dense")[:, 0]

    return init, apply


def num_params(params: Any) -> int:
    return sum(int(a.size) for a in jax.tree.leaves(params))


def save_generator(path: str | Path, spec: GeneratorSpec, params: Any) -> str:
    """Writes ``spec`` and ``params`` as msgpack (flax serialization, no pickle).

    Returns the file's sha256 (hex).
    """
    from flax import serialization  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    payload = {"spec": {**spec.to_dict(), "image_shape": list(spec.image_shape)},
               "params": jax.tree.map(np.asarray, params)}
    data = serialization.msgpack_serialize(payload)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_generator(path_or_name: str | Path, *, sha256: str | None = None
                   ) -> tuple[GeneratorSpec, Any]:
    """Loads a generator's ``(spec, params)``.

    Args:
      path_or_name: a name in :data:`SHIPPED` ("mnist": the weights shipped with jgi)
        or the path of a file written by :func:`save_generator` (or by
        ``experiments.train_generator``).
      sha256: expected checksum of a file given by path (shipped weights carry theirs).

    Raises:
      FileNotFoundError: no such file or name.
      ValueError: the checksum does not match.
    """
    from flax import serialization  # pylint: disable=g-import-not-at-top
    name = str(path_or_name)
    if name in SHIPPED:
        fname, expected = SHIPPED[name]
        path = WEIGHTS_DIR / fname
        sha256 = expected
    else:
        path = Path(path_or_name)
        if not path.is_file():
            raise FileNotFoundError(
                f"load_generator: {path_or_name!r} is neither a shipped generator "
                f"({', '.join(SHIPPED) or 'none shipped'}) nor a file; train one with "
                "`python -m experiments.train_generator --dataset=mnist --workdir=DIR`.")
    if not path.is_file():
        raise FileNotFoundError(f"load_generator: the shipped weights {path} are missing "
                                "from this installation (package data not installed?).")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ValueError(f"load_generator: {path} has sha256 {digest}, expected {sha256}; "
                         "the file is corrupt or not the one shipped. Reinstall jgi or "
                         "retrain the generator.")
    payload = serialization.msgpack_restore(data)
    spec = GeneratorSpec.from_dict(payload["spec"])
    params = jax.tree.map(jnp.asarray, payload["params"])
    return spec, params
