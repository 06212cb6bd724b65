"""The small CNN of the core paper, with its model-level defenses.

Scheliga et al., "Combining stochastic defenses to resist gradient inversion: an
ablation study", section 5 (the same CNN as Scheliga et al. 2024b, CVB): three
convolutional layers with 5x5 kernels, 16/32/64 channels, stride 2 and ReLU, then one
fully connected layer to the classes (softmax is part of the loss).

Choices where the paper is silent:
- Padding. The authors' public configuration uses ``valid`` padding on inputs resized to
  32x32x3 (MNIST included); on native 28x28 MNIST three valid stride-2 5x5 convolutions
  leave no pixel (28 -> 12 -> 4 -> 0), so jgi defaults to ``SAME`` padding, which works
  on 28x28x1 and 32x32x3 alike (28 -> 14 -> 7 -> 4, 32 -> 16 -> 8 -> 4; 1,024 features
  before the classifier). ``padding="VALID"`` gives the authors' layout on 32x32 inputs.
- Dropout (rate p, paper 0.25) sits after the ReLU of every convolutional block, the
  ``regularization_layer`` slot of the authors' CNN block (conv -> regularisation ->
  activation; with inverted scaling, dropout before or after ReLU is the same
  function). There is no dropout before the classifier, which in the authors' CNN is a
  bare linear layer.
- CVB sits after convolutional block 0 (kernel 5, beta 0.1, K = max(16 / 2, 8) = 8), as
  the authors' CNNCVB configuration places it (``positions: [0]``).
- PRECODE (K = 256, beta 1e-3, KL in bits; :mod:`jgi.models.bottleneck`) sits by
  default in the same slot, after convolutional block 0 (``precode_position="slot0"``),
  on the flattened 14x14x16 map (3,136 features at 28x28 SAME and at 32x32 VALID),
  decoded back to the map's shape, as the authors' fully connected bottleneck handles a
  feature-map input. The ablation paper takes PRECODE's settings "as recommended" by
  Scheliga et al. 2024b (CVB), whose framework places every bottleneck at position 0,
  and its PIG fails against the paper's PRECODE (CNN 0.42 SSIM / 21% ASR), which it
  does not with PRECODE before the classifier (AUTHORS-CODE.md: an inference, high
  confidence; no public code of PRECODE in that framework). ``precode_position=
  "classifier"`` puts it on the flattened features just before the classifier
  (PRECODE's own paper; jgi's default before issue 16); ``precode_block=i`` after
  convolutional block ``i``, for any ``i``.
- The authors' layout (``jgi.data.LAYOUTS["authors"]``): MNIST resized to 32x32 and
  repeated over 3 channels, and ``padding="VALID"`` (32 -> 14 -> 5 -> 1): 65,962
  parameters with 10 classes, the count behind the paper's pruning numbers (660 kept at
  99%). jgi's default layout (28x28x1, SAME) has 74,762.

Noise: ``{"dropout": {"conv0": mask, "conv1": mask, "conv2": mask}, "eps": eps}``, each
with a leading batch axis; keys absent when the layer is absent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jgi.models import bottleneck as vb
from jgi.models import dropout as do
from jgi.models import layers
from jgi.models.interface import Model, check_noise_keys, check_options

# CVB placement and hyperparameters per model (Scheliga et al. 2024b, authors' configs).
CVB_KERNEL, CVB_BETA = 5, 0.1
PRECODE_K, PRECODE_BETA = 256, 1e-3


def cnn(num_classes: int = 10, channels: tuple[int, ...] = (16, 32, 64), kernel_size: int = 5,
        stride: int = 2, padding: str = "SAME", conv_impl: str = "patches",
        dropout: float = 0.0, bottleneck: str | None = None,
        precode_position: str = "slot0", precode_block: int | None = None) -> Model:
    """Builds the paper's CNN.

    Args:
      num_classes: outputs of the classifier.
      channels: output channels of the convolutional layers (paper: 16, 32, 64).
      kernel_size: square kernel size (paper: 5).
      stride: stride of every convolution (paper: 2).
      padding: "SAME" (default, see module docstring) or "VALID".
      conv_impl: "patches" (fast under vmap) or "lax"; both give the same function.
      dropout: dropout rate after every convolutional block (0 = none; paper 0.25).
      bottleneck: None, "precode" or "cvb".
      precode_position: where PRECODE sits: "slot0" (default; after conv block 0, the
        CVB framework's position 0) or "classifier" (on the flattened features just
        before the classifier).
      precode_block: the convolutional block PRECODE follows (0 .. len(channels) - 1);
        when given it decides the placement (``precode_position`` must then keep its
        default). Both options are ignored (and not recorded in ``options``) without
        ``bottleneck="precode"``, so one ``--model-options=precode_position=classifier``
        applies to every PRECODE row of a table.

    Returns:
      A :class:`~jgi.models.interface.Model` whose params are
      ``{"conv0", ..., "bottleneck" (if any), "dense"}``.
    """
    if padding not in layers.PADDINGS:
        raise ValueError(f"cnn: unknown padding {padding!r}; valid: {', '.join(layers.PADDINGS)}.")
    check_options("cnn", conv_impl=conv_impl, conv_impls=layers.CONV_IMPLS,
                  bottleneck=bottleneck, bottlenecks=vb.BOTTLENECKS, dropout=dropout)
    channels = tuple(channels)
    n_conv = len(channels)
    if precode_block is not None and (isinstance(precode_block, bool) or not isinstance(
            precode_block, int) or not 0 <= precode_block < n_conv):
        raise ValueError(f"cnn: precode_block must be a block index in 0..{n_conv - 1}, "
                         f"got {precode_block!r}.")
    vb.check_precode_position("cnn", precode_position)
    if precode_block is not None and precode_position != "slot0":
        raise ValueError(f"cnn: precode_block={precode_block} and precode_position="
                         f"{precode_position!r} both place PRECODE; give one of them.")
    if bottleneck != "precode":
        precode_block = None  # a table-wide placement: only PRECODE rows use it
    if precode_block is not None:
        pc_block = precode_block
    else:
        pc_block = 0 if precode_position == "slot0" else n_conv - 1

    def block_shapes(input_shape):
        h, w, _ = input_shape
        shapes = []
        for i, c in enumerate(channels):
            h = layers.conv_output_size(h, kernel_size, stride, padding)
            w = layers.conv_output_size(w, kernel_size, stride, padding)
            if h < 1 or w < 1:
                raise ValueError(
                    f"cnn: input {tuple(input_shape)} is too small for conv{i} "
                    f"({kernel_size}x{kernel_size}, stride {stride}, {padding} padding).")
            shapes.append((h, w, c))
        return shapes

    def init(key: jax.Array, input_shape: tuple[int, int, int]) -> dict:
        if len(input_shape) != 3:
            raise ValueError(f"cnn: input_shape must be (H, W, C), got {tuple(input_shape)}.")
        keys = jax.random.split(key, n_conv + 2)
        params = {}
        cin = input_shape[-1]
        for i, cout in enumerate(channels):
            params[f"conv{i}"] = layers.conv_init(keys[i], kernel_size, cin, cout)
            cin = cout
        h, w, c = block_shapes(input_shape)[-1]
        params["dense"] = layers.dense_init(keys[n_conv], h * w * c, num_classes)
        if bottleneck == "cvb":
            params["bottleneck"] = vb.cvb_init(keys[-1], channels[0], CVB_KERNEL)
        elif bottleneck == "precode":
            ph, pw, pc = block_shapes(input_shape)[pc_block]
            params["bottleneck"] = vb.precode_init(keys[-1], ph * pw * pc, PRECODE_K)
        return params

    def sample_noise(key: jax.Array, input_shape, batch_size: int) -> dict:
        shapes = block_shapes(input_shape)
        k_drop, k_eps = jax.random.split(key)
        noise = {}
        if dropout > 0:
            keys = jax.random.split(k_drop, n_conv)
            noise["dropout"] = {f"conv{i}": do.sample_mask(keys[i], (batch_size, *shapes[i]),
                                                           dropout) for i in range(n_conv)}
        if bottleneck == "cvb":
            noise["eps"] = jax.random.normal(k_eps, vb.cvb_eps_shape(batch_size, *shapes[0]))
        elif bottleneck == "precode":
            noise["eps"] = jax.random.normal(k_eps, vb.precode_eps_shape(batch_size, PRECODE_K))
        return noise

    def forward(params: dict, x: jax.Array, noise: dict):
        if x.ndim != 4:
            raise ValueError(f"cnn: expected x of shape (batch, H, W, C), got {tuple(x.shape)}.")
        h, w, c = block_shapes(x.shape[1:])[-1]
        if h * w * c != params["dense"]["w"].shape[0]:
            raise ValueError(
                f"cnn: params expect {params['dense']['w'].shape[0]} features before the "
                f"classifier, but inputs of shape {tuple(x.shape[1:])} give {h * w * c}; "
                f"initialise the params with model.init(key, {tuple(x.shape[1:])}).")
        check_noise_keys("cnn", noise, dropout=dropout, bottleneck=bottleneck)
        penalty = jnp.zeros((), jnp.float32)
        for i in range(n_conv):
            x = jax.nn.relu(layers.conv(params[f"conv{i}"], x, stride=stride, padding=padding,
                                        impl=conv_impl, name=f"cnn.conv{i}"))
            if dropout > 0:
                x = do.apply_mask(x, noise["dropout"][f"conv{i}"], dropout,
                                  name=f"cnn.dropout{i}")
            if i == 0 and bottleneck == "cvb":
                x, penalty = vb.cvb_apply(params["bottleneck"], x, noise["eps"], CVB_BETA,
                                          conv_impl=conv_impl)
            if i == pc_block and bottleneck == "precode":
                x, penalty = vb.precode_apply(params["bottleneck"], x, noise["eps"],
                                              PRECODE_BETA)
        x = x.reshape(x.shape[0], -1)
        return layers.dense(params["dense"], x, name="cnn.dense"), penalty

    order = [f"conv{i}" for i in range(n_conv)]
    if bottleneck == "cvb":
        order.insert(1, "bottleneck")
    elif bottleneck == "precode":
        order.insert(pc_block + 1, "bottleneck")
    order.append("dense")
    options = (("num_classes", num_classes), ("channels", channels),
               ("kernel_size", kernel_size), ("stride", stride), ("padding", padding),
               ("conv_impl", conv_impl), ("dropout", dropout), ("bottleneck", bottleneck))
    # Recorded for every PRECODE model (so rows of the two placements, and rows made
    # before the KL in bits, never share an id), for no other model.
    if precode_block is not None:
        options += (("precode_position", f"block{precode_block}"),
                    ("precode_block", precode_block))
    elif bottleneck == "precode":
        options += (("precode_position", precode_position),)
    return Model(name="cnn", init=init, forward=forward, sample_noise=sample_noise,
                 classifier="dense", layer_order=tuple(order), dropout=dropout,
                 bottleneck=bottleneck, options=options)
