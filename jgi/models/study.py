"""The models of the FedAvg leakage study and of DLF, as pure ``init``/``apply`` functions.

Zhu, Huang, Xie, "Privacy attack in federated learning is not easy: an experimental
study" (2024; "NotEasy"), section IV-B, and Dimitrov et al., "Data leakage in federated
averaging" (TMLR 2022; "DLF").

``study_cnn`` -- NotEasy's CNN: "two 3x3 convolutional kernels with 32 and 64 output
channels, respectively, followed by a hidden fully connected layer with 512 neurons".
The layout (from the study's code, summarised in BREADTH.md section 1): conv3x3-32
(padding 1) -> ReLU -> conv3x3-64 (padding 1) -> ReLU -> one 2x2 max-pool (stride 2)
-> flatten -> FC 512 -> ReLU -> FC C; no dropout. On 32x32 inputs the flattened map is
16 x 16 x 64 = 16,384 features. Parameters (10 classes): 8,413,642 on 32x32x3 inputs
(896 + 18,496 + 8,389,120 + 5,130), 6,446,986 on 28x28x1.

``convnet3`` -- DLF's "ConvNet3" (``CNN_3`` in ``fedavg/models/base_flax.py`` of
eth-sri/fedavg_leakage, the one the study's DLF runs port): conv3x3-64 -> ReLU ->
2x2 average pool (stride 2) -> conv3x3-128 -> ReLU -> 2x2 average pool -> flatten ->
FC 200 -> ReLU -> FC C. The original's convolutions are Flax's ``nn.Conv`` with its
defaults: stride 1, ``SAME`` padding (padding 1 for a 3x3 kernel), with bias; its pools
are ``nn.avg_pool`` with the default ``VALID`` padding, which drops an odd last
row/column as PyTorch's pooling does. Parameters (10 classes): 1,716,258 on 32x32x3
(1,792 + 73,856 + 1,638,600 + 2,010), 1,331,106 on 28x28x1 (640 + 73,856 + 1,254,600 + 2,010;
7x7x128 = 6,272 features).

The 256-unit MLP of the study ("one hidden layer with 256 neurons", used for CPA and
DLF in Fig. 44-45) is :func:`jgi.models.mlp.mlp` with its defaults (``width=256``):
789,258 parameters on 32x32x3 inputs.

Choices where the papers are silent:
- Initialisation. The study runs PyTorch, so both models default to PyTorch's layer
  defaults (:mod:`jgi.models.layers`: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
  biases). ``init="flax"`` gives DLF's original initialisation instead (Flax's
  defaults: LeCun-normal kernels, i.e. a truncated normal of variance 1/fan_in, and
  zero biases).
- Pools on odd sizes drop the last row/column (PyTorch's and Flax's default), so both
  models accept any input of at least 2x2 (``study_cnn``) or 4x4 (``convnet3``).
- The final softmax (DLF's ``log_softmax``) is part of the loss, as for every jgi model.

Convolutions default to the "patches" form (:mod:`jgi.models.layers`). A local training
runs its steps inside ``lax.scan``, and there XLA:CPU ran the ``lax`` convolutions of the
study CNN about 50 times slower than outside a loop (3 scanned SGD steps of batch 50: 51 s
with "lax", 2.1 s with "patches", 1.0 s with "lax" unrolled; 2 shared CPU cores, jax
0.10); under ``vmap`` over clients or victims "lax" also becomes a grouped convolution.

Both are deterministic (noise ``{}``); neither has a dropout or bottleneck option.
Params: ``{"conv0", "conv1", "hidden", "dense"}``; ``dense`` is the classifier.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jgi.models import layers
from jgi.models.interface import Model, check_noise_keys, no_noise

INITS = ("pytorch", "flax")
POOLS = ("max", "avg")


def pool2x2(x: jax.Array, kind: str) -> jax.Array:
    """2x2 pooling with stride 2 on NHWC ``x``; an odd last row/column is dropped."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    x = x.reshape(b, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))


def _flax_init(params: dict, key: jax.Array) -> dict:
    """Flax's defaults: LeCun-normal kernels (fan_in over all but the last axis), zero bias."""
    out = {}
    for name, key_i in zip(sorted(params), jax.random.split(key, len(params)), strict=True):
        w = params[name]["w"]
        out[name] = {"w": jax.nn.initializers.lecun_normal()(key_i, w.shape, jnp.float32),
                     "b": jnp.zeros_like(params[name]["b"])}
    return out


def _conv_pool_model(name: str, *, num_classes: int, channels: tuple[int, int],
                     pools: tuple[str | None, str | None], hidden: int, init: str,
                     conv_impl: str) -> Model:
    """Two 3x3 SAME convolutions (ReLU, optional 2x2 pool after each), FC hidden, FC C."""
    if init not in INITS:
        raise ValueError(f"{name}: unknown init {init!r}; valid: {', '.join(INITS)}.")
    if conv_impl not in layers.CONV_IMPLS:
        raise ValueError(f"{name}: unknown conv_impl {conv_impl!r}; valid: "
                         f"{', '.join(layers.CONV_IMPLS)}.")
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}.")

    def features(input_shape) -> int:
        if len(input_shape) != 3:
            raise ValueError(f"{name}: input_shape must be (H, W, C), got "
                             f"{tuple(input_shape)}.")
        h, w, _ = input_shape
        for i, pool in enumerate(pools):
            if pool is not None:
                h, w = h // 2, w // 2
                if h < 1 or w < 1:
                    raise ValueError(f"{name}: input {tuple(input_shape)} is too small for "
                                     f"the 2x2 pool after conv{i}.")
        return h * w * channels[-1]

    def init_fn(key: jax.Array, input_shape: tuple[int, int, int]) -> dict:
        n_features = features(input_shape)
        k = jax.random.split(key, 5)
        params = {"conv0": layers.conv_init(k[0], 3, input_shape[-1], channels[0]),
                  "conv1": layers.conv_init(k[1], 3, channels[0], channels[1]),
                  "hidden": layers.dense_init(k[2], n_features, hidden),
                  "dense": layers.dense_init(k[3], hidden, num_classes)}
        return _flax_init(params, k[4]) if init == "flax" else params

    def forward(params: dict, x: jax.Array, noise: dict):
        if x.ndim != 4:
            raise ValueError(f"{name}: expected x of shape (batch, H, W, C), got "
                             f"{tuple(x.shape)}.")
        n_features = features(x.shape[1:])
        if n_features != params["hidden"]["w"].shape[0]:
            raise ValueError(
                f"{name}: params expect {params['hidden']['w'].shape[0]} features before the "
                f"hidden layer, but inputs of shape {tuple(x.shape[1:])} give {n_features}; "
                f"initialise the params with model.init(key, {tuple(x.shape[1:])}).")
        check_noise_keys(name, noise, dropout=0.0, bottleneck=None)
        for i, pool in enumerate(pools):
            x = jax.nn.relu(layers.conv(params[f"conv{i}"], x, stride=1, padding="SAME",
                                        impl=conv_impl, name=f"{name}.conv{i}"))
            if pool is not None:
                x = pool2x2(x, pool)
        x = jax.nn.relu(layers.dense(params["hidden"], x.reshape(x.shape[0], -1),
                                     name=f"{name}.hidden"))
        return layers.dense(params["dense"], x, name=f"{name}.dense"), jnp.zeros((), jnp.float32)

    return Model(name=name, init=init_fn, forward=forward, sample_noise=no_noise,
                 classifier="dense", layer_order=("conv0", "conv1", "hidden", "dense"),
                 options=(("num_classes", num_classes), ("init", init),
                          ("conv_impl", conv_impl)))


def study_cnn(num_classes: int = 10, init: str = "pytorch",
              conv_impl: str = "patches") -> Model:
    """NotEasy's CNN (see the module docstring): 8,413,642 parameters on 32x32x3.

    Args:
      num_classes: outputs of the classifier.
      init: "pytorch" (default, the study's framework) or "flax".
      conv_impl: "patches" (default) or "lax"; the same function. See the module
        docstring for why "patches" is the default.
    """
    return _conv_pool_model("study_cnn", num_classes=num_classes, channels=(32, 64),
                            pools=(None, "max"), hidden=512, init=init, conv_impl=conv_impl)


def convnet3(num_classes: int = 10, init: str = "pytorch",
             conv_impl: str = "patches") -> Model:
    """DLF's ConvNet3 (see the module docstring): 1,716,258 parameters on 32x32x3.

    Args:
      num_classes: outputs of the classifier.
      init: "pytorch" (default, the study's port) or "flax" (DLF's original).
      conv_impl: "patches" (default) or "lax"; the same function.
    """
    return _conv_pool_model("convnet3", num_classes=num_classes, channels=(64, 128),
                            pools=("avg", "avg"), hidden=200, init=init, conv_impl=conv_impl)


__all__ = ["INITS", "convnet3", "pool2x2", "study_cnn"]
