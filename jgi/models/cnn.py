"""The small CNN of the core paper.

Scheliga et al., "Combining stochastic defenses to resist gradient inversion: an
ablation study", section 5 (the same CNN as Scheliga et al. 2024b, CVB): three
convolutional layers with 5x5 kernels, 16/32/64 channels, stride 2 and ReLU, then one
fully connected layer to the classes (softmax is part of the loss).

Choice where the paper is silent: padding. The authors' public configuration uses
``valid`` padding on inputs resized to 32x32x3 (MNIST included); on native 28x28 MNIST
three valid stride-2 5x5 convolutions leave no pixel (28 -> 12 -> 4 -> 0), so jgi
defaults to ``SAME`` padding, which works on 28x28x1 and 32x32x3 alike
(28 -> 14 -> 7 -> 4, 32 -> 16 -> 8 -> 4; 1,024 features before the classifier). Pass
``padding="VALID"`` for the authors' layout on 32x32 inputs (64 features).
"""

from __future__ import annotations

import jax

from jgi.models import layers
from jgi.models.interface import Model, no_noise


def cnn(num_classes: int = 10, channels: tuple[int, ...] = (16, 32, 64), kernel_size: int = 5,
        stride: int = 2, padding: str = "SAME", conv_impl: str = "patches") -> Model:
    """Builds the paper's CNN.

    Args:
      num_classes: outputs of the classifier.
      channels: output channels of the convolutional layers (paper: 16, 32, 64).
      kernel_size: square kernel size (paper: 5).
      stride: stride of every convolution (paper: 2).
      padding: "SAME" (default, see module docstring) or "VALID".
      conv_impl: "patches" (fast under vmap) or "lax"; both give the same function.

    Returns:
      A :class:`~jgi.models.interface.Model` whose params are
      ``{"conv0", "conv1", ..., "dense"}``.
    """
    if padding not in layers.PADDINGS:
        raise ValueError(f"cnn: unknown padding {padding!r}; valid: {', '.join(layers.PADDINGS)}.")
    if conv_impl not in layers.CONV_IMPLS:
        raise ValueError(
            f"cnn: unknown conv_impl {conv_impl!r}; valid: {', '.join(layers.CONV_IMPLS)}.")
    channels = tuple(channels)

    def feature_shape(input_shape):
        h, w, _ = input_shape
        for i in range(len(channels)):
            h = layers.conv_output_size(h, kernel_size, stride, padding)
            w = layers.conv_output_size(w, kernel_size, stride, padding)
            if h < 1 or w < 1:
                raise ValueError(
                    f"cnn: input {tuple(input_shape)} is too small for conv{i} "
                    f"({kernel_size}x{kernel_size}, stride {stride}, {padding} padding)."
                )
        return h, w, channels[-1]

    def init(key: jax.Array, input_shape: tuple[int, int, int]) -> dict:
        if len(input_shape) != 3:
            raise ValueError(f"cnn: input_shape must be (H, W, C), got {tuple(input_shape)}.")
        keys = jax.random.split(key, len(channels) + 1)
        params = {}
        cin = input_shape[-1]
        for i, cout in enumerate(channels):
            params[f"conv{i}"] = layers.conv_init(keys[i], kernel_size, cin, cout)
            cin = cout
        h, w, c = feature_shape(input_shape)
        params["dense"] = layers.dense_init(keys[-1], h * w * c, num_classes)
        return params

    def apply(params: dict, x: jax.Array, noise: dict) -> jax.Array:
        del noise  # deterministic
        if x.ndim != 4:
            raise ValueError(f"cnn: expected x of shape (batch, H, W, C), got {tuple(x.shape)}.")
        h, w, c = feature_shape(x.shape[1:])
        if h * w * c != params["dense"]["w"].shape[0]:
            raise ValueError(
                f"cnn: params expect {params['dense']['w'].shape[0]} features before the "
                f"classifier, but inputs of shape {tuple(x.shape[1:])} give {h * w * c}; "
                f"initialise the params with model.init(key, {tuple(x.shape[1:])})."
            )
        for i in range(len(channels)):
            x = jax.nn.relu(layers.conv(params[f"conv{i}"], x, stride=stride, padding=padding,
                                        impl=conv_impl, name=f"cnn.conv{i}"))
        x = x.reshape(x.shape[0], -1)
        return layers.dense(params["dense"], x, name="cnn.dense")

    options = (("num_classes", num_classes), ("channels", channels),
               ("kernel_size", kernel_size), ("stride", stride), ("padding", padding),
               ("conv_impl", conv_impl))
    return Model(name="cnn", init=init, apply=apply, sample_noise=no_noise,
                 classifier="dense", options=options)
