"""ResNet-18 with GroupNorm instead of BatchNorm, with its model-level defenses.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (the
18-layer network of its Table 1: BasicBlocks [2, 2, 2, 2], widths 64/128/256/512), as
used in Scheliga et al., "Combining stochastic defenses to resist gradient inversion:
an ablation study", section 6.2: "the pre-defined architecture as described in the
original paper", 10 output classes, BatchNorm replaced by GroupNorm (Wu & He, ECCV
2018) because per-client batch statistics are a poor fit for FL.

The paper leaves the details open; jgi takes them from the authors' public code
(dAI-SY-Group/ConvolutionalVariationalBottleneck: ``src/models/ResNet.py``,
``src/models/modules.py``, ``configs/models/ResNet18*.yaml``), which wraps torchvision's
``resnet18`` and swaps its norm layer:

- Stem: torchvision's ImageNet stem, kept unchanged on 32x32 inputs (no CIFAR-style
  3x3 stem): 7x7 conv, stride 2, padding 3, no bias -> GroupNorm -> ReLU -> 3x3 max
  pool, stride 2, padding 1. A 32x32 input reaches layer1 at 8x8 (the authors' code
  sizes its CVB for ``H // 4``), then 4x4, 2x2 and 1x1 in layers 2 to 4; a 28x28 MNIST
  input goes 14 -> 7 -> 4 -> 2 -> 1. Any input of at least 1x1 works, since every
  convolution is padded; the paper feeds 32x32 (and, for MNIST, the authors' pipeline
  resizes to 32x32x3).
- Padding is PyTorch's explicit symmetric padding (3 for the stem, 1 for 3x3 convs, 0
  for the 1x1 shortcut convs), not ``lax``'s "SAME", which pads asymmetrically on
  even inputs and would shift every strided window by one pixel.
- Blocks: torchvision's BasicBlock: conv3x3(stride) -> GN -> ReLU -> conv3x3 -> GN,
  plus the identity, or a 1x1 conv(stride) -> GN shortcut where the shape changes
  (first block of layers 2 to 4); ReLU after the sum. Convolutions have no bias.
- GroupNorm: 2 groups (the authors' ``gn_groups: 2``), eps 1e-5, per-channel scale and
  shift initialised to 1 and 0. It normalises each example on its own, so per-example
  gradients (DP-SGD) and batch-size-1 updates are well defined.
- Head: global average pool -> [dropout] -> Linear(512, classes) with bias.
- Initialisation as torchvision's ResNet does it (the authors' code does not change
  it): convolutions Kaiming-normal with ``mode="fan_out"``, ``nonlinearity="relu"``
  (std sqrt(2 / (k * k * out))), norm scale 1 and shift 0, the classifier with
  PyTorch's default Linear init (:func:`jgi.models.layers.dense_init`). The bottleneck
  layers keep PyTorch's default init (the authors build them after torchvision's init
  loop ran).
- Dropout (rate p; the ablation uses 0.25): only on the pooled 512 features just before
  the classifier, where the authors' ``ResNet`` puts its single ``MaskDropout``. There
  is no dropout inside the residual blocks.
- CVB after layer1 (64 channels, K = 32, kernel 5, beta 5e-5; the authors'
  ``ResNet18CVB.yaml``: ``positions: [0]``, ``kernel_size: 5``, ``beta: 0.00005``).
  PRECODE (K = 256, beta 1e-3, KL in bits) by default in the same slot, after layer1
  (``precode_position="slot0"``: the CVB framework's position 0, where the ablation
  paper's PRECODE sits by AUTHORS-CODE.md's high-confidence inference; see
  :mod:`jgi.models.cnn`), on the flattened h1 x w1 x 64 map (4,096 features at 32x32,
  3,136 at 28x28) decoded back to its shape. jgi flattens NHWC where the authors'
  module flattens NCHW: a fixed permutation of the encoder's inputs and the decoder's
  outputs, the same function family under their random initialisation.
  ``precode_position="classifier"``: on the pooled 512 features, before dropout and the
  classifier, where the authors' ``VBResNet`` puts a bottleneck at its last position
  (after the average pool, before flatten -> dropout -> fc).

Deviations: none in the architecture. jgi's KL for the bottlenecks is the one of
:mod:`jgi.models.bottleneck` (see there for why it differs from the authors' code).

Parameters (10 classes): 11,181,642 on 32x32x3 and 11,175,370 on 28x28x1 inputs, the
same as torchvision's resnet18 with a 10-way head (GroupNorm has as many parameters as
BatchNorm); CVB adds 2 * 5 * 5 * 64 * 32 + 32 * 64 = 104,448, PRECODE after layer1 on
32x32 inputs 4096 * 512 + 512 + 256 * 4096 + 4096 = 3,150,336, PRECODE before the
classifier 512 * 512 + 512 + 256 * 512 + 512 = 394,240.

Params: ``{"stem": {"conv", "norm"}, "layer1": {"block0", "block1"}, [bottleneck],
"layer2", "layer3", "layer4", [bottleneck], "dense"}``, each block
``{"conv1", "norm1", "conv2", "norm2", ["downsample": {"conv", "norm"}]}``.

Noise: ``{"dropout": {"pool": mask (B, 512)}, "eps": eps}``, keys absent when the layer
is absent; CVB eps is (B, h1, w1, 32) with h1 x w1 the spatial size of layer1's output
(8x8 for 32x32 inputs, 7x7 for 28x28), PRECODE eps is (B, 256) at either position.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jgi.models import bottleneck as vb
from jgi.models import dropout as do
from jgi.models import layers
from jgi.models.interface import Model, check_noise_keys, check_options

# The authors' ResNet18CVB.yaml (CVB after layer1) and PRECODE's recommended settings.
CVB_KERNEL, CVB_BETA = 5, 5e-5
PRECODE_K, PRECODE_BETA = 256, 1e-3

WIDTHS = (64, 128, 256, 512)  # He et al. 2016, Table 1, 18-layer
BLOCKS = (2, 2, 2, 2)
STEM_KERNEL, STEM_STRIDE, STEM_PAD = 7, 2, 3
POOL_KERNEL, POOL_STRIDE, POOL_PAD = 3, 2, 1
GN_EPS = 1e-5


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """PyTorch's output size of a convolution or pooling with symmetric padding."""
    return (size + 2 * pad - kernel) // stride + 1


def _pad(x: jax.Array, pad: int, value: float = 0.0) -> jax.Array:
    if pad == 0:
        return x
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=value)


def conv_init_kaiming(key: jax.Array, kernel_size: int, in_channels: int,
                      out_channels: int) -> dict:
    """torchvision's ResNet conv init: Kaiming normal, fan_out, ReLU gain; no bias."""
    std = math.sqrt(2.0 / (kernel_size * kernel_size * out_channels))
    w = std * jax.random.normal(key, (kernel_size, kernel_size, in_channels, out_channels))
    return {"w": w.astype(jnp.float32)}


def group_norm_init(channels: int) -> dict:
    return {"scale": jnp.ones((channels,), jnp.float32),
            "bias": jnp.zeros((channels,), jnp.float32)}


def group_norm(params: dict, x: jax.Array, groups: int, *, name: str = "group_norm"):
    """GroupNorm (Wu & He 2018) of NHWC ``x``: each example's channel groups normalised
    over (H, W, channels in the group) with the biased variance, eps 1e-5, as
    ``torch.nn.GroupNorm``; then a per-channel scale and shift."""
    b, h, w, c = x.shape
    if c % groups:
        raise ValueError(f"{name}: {c} channels do not split into {groups} groups.")
    g = x.reshape(b, h, w, groups, c // groups)
    mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
    g = (g - mean) * lax.rsqrt(var + GN_EPS)
    return g.reshape(b, h, w, c) * params["scale"] + params["bias"]


def max_pool(x: jax.Array, kernel: int, stride: int, pad: int, impl: str) -> jax.Array:
    """Max pooling with PyTorch's -inf padding, in the two formulations of the convs.

    ``"lax"``: ``lax.reduce_window``. ``"patches"``: the max over ``kernel**2`` strided
    slices, the same trick as :func:`jgi.models.layers.extract_patches`. Same values;
    the gradients differ only where several inputs of a window tie for the maximum,
    which after a ReLU happens (but for measure-zero cases) only at 0, where the
    ReLU's own gradient is 0 anyway.
    """
    if impl == "lax":
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, kernel, kernel, 1),
                                 (1, stride, stride, 1),
                                 ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    b, h, w, c = x.shape
    ho, wo = _out_size(h, kernel, stride, pad), _out_size(w, kernel, stride, pad)
    x = _pad(x, pad, -jnp.inf)
    out = None
    for i in range(kernel):
        for j in range(kernel):
            s = lax.slice(x, (0, i, j, 0),
                          (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                          (1, stride, stride, 1))
            out = s if out is None else jnp.maximum(out, s)
    return out


def resnet18(num_classes: int = 10, dropout: float = 0.0, bottleneck: str | None = None,
             conv_impl: str = "patches", groups: int = 2,
             widths: tuple[int, ...] = WIDTHS, blocks: tuple[int, ...] = BLOCKS,
             precode_position: str = "slot0") -> Model:
    """Builds ResNet-18 with GroupNorm (see the module docstring for every choice).

    Args:
      num_classes: outputs of the classifier (paper: 10).
      dropout: dropout rate on the pooled features before the classifier (0 = none;
        paper 0.25).
      bottleneck: None, "precode" (where ``precode_position`` says) or "cvb" (after
        layer1).
      conv_impl: "patches" (fast under vmap) or "lax"; both give the same function.
      groups: GroupNorm groups (the authors' 2); must divide every width.
      widths: output channels of each stage (ResNet-18: 64, 128, 256, 512).
      blocks: BasicBlocks per stage (ResNet-18: 2, 2, 2, 2). Other ``widths`` and
        ``blocks`` give smaller or larger ResNets of the same design (the tests use a
        small one to keep compile times down); the name stays "resnet18".
      precode_position: "slot0" (default; after layer1) or "classifier" (on the pooled
        features). Ignored, and not recorded, without ``bottleneck="precode"``.

    Returns:
      A :class:`~jgi.models.interface.Model` named "resnet18".
    """
    check_options("resnet18", conv_impl=conv_impl, conv_impls=layers.CONV_IMPLS,
                  bottleneck=bottleneck, bottlenecks=vb.BOTTLENECKS, dropout=dropout)
    vb.check_precode_position("resnet18", precode_position)
    pc_early = bottleneck == "precode" and precode_position == "slot0"
    pc_late = bottleneck == "precode" and precode_position == "classifier"
    widths, blocks = tuple(widths), tuple(blocks)
    if len(widths) != len(blocks) or not widths or min(widths + blocks) < 1:
        raise ValueError(f"resnet18: widths {widths} and blocks {blocks} need one positive "
                         f"entry per stage each (ResNet-18: {WIDTHS} and {BLOCKS}).")
    if groups < 1 or any(w % groups for w in widths):
        raise ValueError(f"resnet18: GroupNorm groups must divide every width {widths}, "
                         f"got {groups}.")
    features = widths[-1]

    def check_input_shape(input_shape):
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"resnet18: input_shape must be (H, W, C), got "
                             f"{tuple(input_shape)}.")

    def layer1_size(input_shape):
        """(h, w) of the stem's and layer1's output."""
        h, w = input_shape[:2]
        sizes = []
        for s in (h, w):
            s = _out_size(s, STEM_KERNEL, STEM_STRIDE, STEM_PAD)
            sizes.append(_out_size(s, POOL_KERNEL, POOL_STRIDE, POOL_PAD))
        return tuple(sizes)

    def init(key: jax.Array, input_shape: tuple[int, int, int]) -> dict:
        check_input_shape(input_shape)
        k_stem, k_layers, k_dense, k_vb = jax.random.split(key, 4)
        params = {"stem": {"conv": conv_init_kaiming(k_stem, STEM_KERNEL, input_shape[-1],
                                                     widths[0]),
                           "norm": group_norm_init(widths[0])}}
        cin = widths[0]
        for li, (cout, n) in enumerate(zip(widths, blocks, strict=True)):
            layer = {}
            for bi in range(n):
                k1, k2, k3 = jax.random.split(
                    jax.random.fold_in(jax.random.fold_in(k_layers, li), bi), 3)
                stride = 2 if (li > 0 and bi == 0) else 1
                block = {"conv1": conv_init_kaiming(k1, 3, cin, cout),
                         "norm1": group_norm_init(cout),
                         "conv2": conv_init_kaiming(k2, 3, cout, cout),
                         "norm2": group_norm_init(cout)}
                if stride != 1 or cin != cout:
                    block["downsample"] = {"conv": conv_init_kaiming(k3, 1, cin, cout),
                                           "norm": group_norm_init(cout)}
                layer[f"block{bi}"] = block
                cin = cout
            params[f"layer{li + 1}"] = layer
        params["dense"] = layers.dense_init(k_dense, features, num_classes)
        if bottleneck == "cvb":
            params["bottleneck"] = vb.cvb_init(k_vb, widths[0], CVB_KERNEL)
        elif pc_early:
            h1, w1 = layer1_size(input_shape)
            params["bottleneck"] = vb.precode_init(k_vb, h1 * w1 * widths[0], PRECODE_K)
        elif pc_late:
            params["bottleneck"] = vb.precode_init(k_vb, features, PRECODE_K)
        return params

    def sample_noise(key: jax.Array, input_shape, batch_size: int) -> dict:
        check_input_shape(input_shape)
        k_drop, k_eps = jax.random.split(key)
        noise = {}
        if dropout > 0:
            noise["dropout"] = {"pool": do.sample_mask(k_drop, (batch_size, features),
                                                       dropout)}
        if bottleneck == "cvb":
            h1, w1 = layer1_size(input_shape)
            noise["eps"] = jax.random.normal(k_eps, vb.cvb_eps_shape(batch_size, h1, w1,
                                                                     widths[0]))
        elif bottleneck == "precode":
            noise["eps"] = jax.random.normal(k_eps, vb.precode_eps_shape(batch_size, PRECODE_K))
        return noise

    def conv(p, x, stride, pad, name):
        return layers.conv(p, _pad(x, pad), stride=stride, padding="VALID", impl=conv_impl,
                           name=name)

    def block_apply(p, x, stride, name):
        out = conv(p["conv1"], x, stride, 1, f"{name}.conv1")
        out = jax.nn.relu(group_norm(p["norm1"], out, groups, name=f"{name}.norm1"))
        out = conv(p["conv2"], out, 1, 1, f"{name}.conv2")
        out = group_norm(p["norm2"], out, groups, name=f"{name}.norm2")
        if "downsample" in p:
            x = conv(p["downsample"]["conv"], x, stride, 0, f"{name}.downsample")
            x = group_norm(p["downsample"]["norm"], x, groups, name=f"{name}.downsample")
        return jax.nn.relu(out + x)

    def forward(params: dict, x: jax.Array, noise: dict):
        cin = params["stem"]["conv"]["w"].shape[2]
        if x.ndim != 4 or x.shape[-1] != cin:
            raise ValueError(f"resnet18: the params expect x of shape (batch, H, W, {cin}), "
                             f"got {tuple(x.shape)}.")
        check_noise_keys("resnet18", noise, dropout=dropout, bottleneck=bottleneck)
        penalty = jnp.zeros((), jnp.float32)
        x = conv(params["stem"]["conv"], x, STEM_STRIDE, STEM_PAD, "resnet18.stem.conv")
        x = jax.nn.relu(group_norm(params["stem"]["norm"], x, groups, name="resnet18.stem"))
        x = max_pool(x, POOL_KERNEL, POOL_STRIDE, POOL_PAD, conv_impl)
        for li, n in enumerate(blocks):
            for bi in range(n):
                stride = 2 if (li > 0 and bi == 0) else 1
                x = block_apply(params[f"layer{li + 1}"][f"block{bi}"], x, stride,
                                f"resnet18.layer{li + 1}.block{bi}")
            if li == 0 and bottleneck == "cvb":
                x, penalty = vb.cvb_apply(params["bottleneck"], x, noise["eps"], CVB_BETA,
                                          conv_impl=conv_impl)
            if li == 0 and pc_early:
                x, penalty = vb.precode_apply(params["bottleneck"], x, noise["eps"],
                                              PRECODE_BETA)
        x = jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1x1, flatten
        if pc_late:
            x, penalty = vb.precode_apply(params["bottleneck"], x, noise["eps"], PRECODE_BETA)
        if dropout > 0:
            x = do.apply_mask(x, noise["dropout"]["pool"], dropout, name="resnet18.dropout")
        return layers.dense(params["dense"], x, name="resnet18.dense"), penalty

    order = ["stem", *(f"layer{i + 1}" for i in range(len(widths)))]
    if bottleneck == "cvb" or pc_early:
        order.insert(2, "bottleneck")
    elif pc_late:
        order.append("bottleneck")
    order.append("dense")
    options = (("num_classes", num_classes), ("dropout", dropout), ("bottleneck", bottleneck),
               ("conv_impl", conv_impl), ("groups", groups), ("widths", widths),
               ("blocks", blocks))
    if bottleneck == "precode":  # recorded for PRECODE models only (row ids of others hold)
        options += (("precode_position", precode_position),)
    return Model(name="resnet18", init=init, forward=forward, sample_noise=sample_noise,
                 classifier="dense", layer_order=tuple(order), dropout=dropout,
                 bottleneck=bottleneck, options=options)
