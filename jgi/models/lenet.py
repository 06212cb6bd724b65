"""DLG's LeNet, and the deeper LeNet of the high-resolution medical attack.

Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019, and its public code
(mit-han-lab/dlg, ``models/vision.py``): three convolutions of 12 channels, kernel 5,
padding 2 on every side, strides 2, 2, 1, each followed by a Sigmoid, then one fully
connected layer to the classes; every weight and bias drawn from U(-0.5, 0.5)
(``weights_init``); inputs in [0, 1] (``ToTensor`` without normalisation). On 32x32x3
that is 32 -> 16 -> 8 -> 8, 768 features, and 15,826 parameters for 10 classes
(85,036 for DLG's 100 CIFAR-100 classes). DLG notes (and NotEasy repeats) that the
attack fails with ReLU or with the default initialisation; both are options here so
that the failure can be shown.

Dao and Nguyen 2023 ("Health", BREADTH.md section 3) use a LeNet with four
convolutions of 12 channels, kernel 5, strides 2, 2, 1, 1, "padding applied", He
initialisation, the flattened features into one fully connected layer with 2 outputs:
``lenet(**HEALTH_OPTIONS)``, on any square (or not) resolution. Their activation is
not stated: ``activation`` offers both.

Choices where the papers are silent:
- Padding is PyTorch's symmetric ``kernel_size // 2`` on every side (DLG's
  ``padding=5 // 2``), not ``SAME``: with stride 2 on an even size, ``SAME`` pads one
  row more at the bottom than at the top, which shifts every output pixel by one.
- ``init="he"``: weights from N(0, 2 / fan_in) with fan_in = k * k * in_channels (He et
  al. 2015, the paper Health cites), biases 0 (He et al. initialise biases to zero).
- ``init="pytorch"``: PyTorch's default layer initialisation
  (:mod:`jgi.models.layers`), the "default init" under which DLG fails.
- The classifier's input is the NHWC feature map flattened in (H, W, C) order;
  PyTorch flattens (C, H, W). The two models are the same up to a permutation of the
  classifier's rows (``benchmarks/dlg_throughput.py`` permutes them to compare).

Deterministic: ``sample_noise`` returns ``{}``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jgi.models import layers
from jgi.models.interface import Model, check_noise_keys, no_noise

ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}
INITS = ("uniform", "he", "pytorch")
UNIFORM_BOUND = 0.5  # DLG's weights_init: U(-0.5, 0.5) for every weight and bias

# The medical paper's LeNet (Dao and Nguyen 2023, section 4): 4 convs x 12 channels,
# kernel 5, strides 2, 2, 1, 1, He initialisation, 2 classes.
HEALTH_OPTIONS = {"channels": (12, 12, 12, 12), "strides": (2, 2, 1, 1), "init": "he",
                  "num_classes": 2}


def _init_conv(key, kernel_size, cin, cout, init):
    if init == "pytorch":
        return layers.conv_init(key, kernel_size, cin, cout)
    kw, kb = jax.random.split(key)
    shape = (kernel_size, kernel_size, cin, cout)
    if init == "uniform":
        return {"w": jax.random.uniform(kw, shape, jnp.float32, -UNIFORM_BOUND, UNIFORM_BOUND),
                "b": jax.random.uniform(kb, (cout,), jnp.float32, -UNIFORM_BOUND,
                                        UNIFORM_BOUND)}
    std = math.sqrt(2.0 / (kernel_size * kernel_size * cin))
    return {"w": std * jax.random.normal(kw, shape, jnp.float32),
            "b": jnp.zeros((cout,), jnp.float32)}


def _init_dense(key, fin, fout, init):
    if init == "pytorch":
        return layers.dense_init(key, fin, fout)
    kw, kb = jax.random.split(key)
    if init == "uniform":
        return {"w": jax.random.uniform(kw, (fin, fout), jnp.float32, -UNIFORM_BOUND,
                                        UNIFORM_BOUND),
                "b": jax.random.uniform(kb, (fout,), jnp.float32, -UNIFORM_BOUND,
                                        UNIFORM_BOUND)}
    return {"w": math.sqrt(2.0 / fin) * jax.random.normal(kw, (fin, fout), jnp.float32),
            "b": jnp.zeros((fout,), jnp.float32)}


def lenet(num_classes: int = 10, channels: tuple[int, ...] = (12, 12, 12),
          strides: tuple[int, ...] = (2, 2, 1), kernel_size: int = 5,
          activation: str = "sigmoid", init: str = "uniform",
          conv_impl: str = "patches") -> Model:
    """Builds DLG's LeNet (defaults) or a variant of it.

    Args:
      num_classes: outputs of the classifier (DLG: 100 for CIFAR-100; 10 here).
      channels: output channels of the convolutions, one per layer (DLG: 12, 12, 12;
        Health: four of 12).
      strides: stride of each convolution, as many as ``channels`` (DLG: 2, 2, 1;
        Health: 2, 2, 1, 1).
      kernel_size: odd square kernel size (5); padding is ``kernel_size // 2``.
      activation: "sigmoid" (DLG) or "relu".
      init: "uniform" (DLG: U(-0.5, 0.5) for every weight and bias), "he" (Health) or
        "pytorch" (PyTorch's default layer initialisation).
      conv_impl: "patches" or "lax" (the same function; see :mod:`jgi.models.layers`).

    Returns:
      A deterministic :class:`~jgi.models.interface.Model` whose params are
      ``{"conv0", ..., "dense"}``.
    """
    channels, strides = tuple(channels), tuple(strides)
    if activation not in ACTIVATIONS:
        raise ValueError(f"lenet: unknown activation {activation!r}; valid: "
                         f"{', '.join(ACTIVATIONS)}.")
    if init not in INITS:
        raise ValueError(f"lenet: unknown init {init!r}; valid: {', '.join(INITS)}.")
    if conv_impl not in layers.CONV_IMPLS:
        raise ValueError(f"lenet: unknown conv_impl {conv_impl!r}; valid: "
                         f"{', '.join(layers.CONV_IMPLS)}.")
    if not channels or len(channels) != len(strides):
        raise ValueError(f"lenet: channels and strides need one entry per convolution and "
                         f"at least one; got channels={channels}, strides={strides}.")
    if any(c < 1 for c in channels) or any(s < 1 for s in strides):
        raise ValueError(f"lenet: channels and strides must be >= 1; got channels={channels}, "
                         f"strides={strides}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"lenet: kernel_size must be odd (padding kernel_size // 2 keeps the "
                         f"centre), got {kernel_size}.")
    if num_classes < 2:
        raise ValueError(f"lenet: num_classes must be >= 2, got {num_classes}.")
    pad = kernel_size // 2
    act = ACTIVATIONS[activation]
    n_conv = len(channels)

    def feature_shape(input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"lenet: input_shape must be (H, W, C), got {tuple(input_shape)}.")
        h, w, c = input_shape
        for i, (cout, s) in enumerate(zip(channels, strides, strict=True)):
            h = (h + 2 * pad - kernel_size) // s + 1
            w = (w + 2 * pad - kernel_size) // s + 1
            if h < 1 or w < 1:
                raise ValueError(f"lenet: input {tuple(input_shape)} is too small for conv{i} "
                                 f"(kernel {kernel_size}, stride {s}, padding {pad}).")
            c = cout
        return h, w, c

    def init_fn(key: jax.Array, input_shape: tuple[int, int, int]) -> dict:
        h, w, c = feature_shape(tuple(input_shape))
        keys = jax.random.split(key, n_conv + 1)
        params = {}
        cin = input_shape[-1]
        for i, cout in enumerate(channels):
            params[f"conv{i}"] = _init_conv(keys[i], kernel_size, cin, cout, init)
            cin = cout
        params["dense"] = _init_dense(keys[-1], h * w * c, num_classes, init)
        return params

    def forward(params: dict, x: jax.Array, noise: dict):
        if x.ndim != 4:
            raise ValueError(f"lenet: expected x of shape (batch, H, W, C), got "
                             f"{tuple(x.shape)}.")
        h, w, c = feature_shape(tuple(x.shape[1:]))
        if h * w * c != params["dense"]["w"].shape[0]:
            raise ValueError(
                f"lenet: params expect {params['dense']['w'].shape[0]} features before the "
                f"classifier, but inputs of shape {tuple(x.shape[1:])} give {h * w * c}; "
                f"initialise the params with model.init(key, {tuple(x.shape[1:])}).")
        check_noise_keys("lenet", noise, dropout=0.0, bottleneck=None)
        for i, s in enumerate(strides):
            x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            x = act(layers.conv(params[f"conv{i}"], x, stride=s, padding="VALID",
                                impl=conv_impl, name=f"lenet.conv{i}"))
        x = x.reshape(x.shape[0], -1)
        return layers.dense(params["dense"], x, name="lenet.dense"), jnp.zeros((), jnp.float32)

    options = (("num_classes", num_classes), ("channels", channels), ("strides", strides),
               ("kernel_size", kernel_size), ("activation", activation), ("init", init),
               ("conv_impl", conv_impl))
    return Model(name="lenet", init=init_fn, forward=forward, sample_noise=no_noise,
                 classifier="dense",
                 layer_order=tuple(f"conv{i}" for i in range(n_conv)) + ("dense",),
                 options=options)
