"""BatchNorm models whose forward pass also returns the batch statistics.

GradInversion (Yin, Mallya, Vahdat, Alvarez, Kautz, Molchanov, "See through Gradients:
Image Batch Recovery via GradInversion", CVPR 2021) matches, at every BatchNorm layer,
the mean and variance of the dummy batch's pre-normalisation activations to the
layer's running statistics, which the server knows because they are part of the
global model it sends out. jgi's :func:`jgi.models.resnet.resnet18` uses GroupNorm (the
ablation study's choice), which has no running statistics, so this module adds:

- :func:`resnet18_bn`: ResNet-18 exactly as :mod:`jgi.models.resnet` builds it
  (torchvision's ImageNet stem, BasicBlocks [2, 2, 2, 2], widths 64-512, PyTorch's
  symmetric padding, Kaiming fan-out init) with every GroupNorm replaced by
  BatchNorm2d, which is torchvision's ``resnet18`` itself (the paper attacks a
  torchvision ResNet-50). 11,181,642 parameters on 32x32x3 inputs (BatchNorm has as
  many as GroupNorm), plus 9,600 running-statistic entries.
- :func:`bn_cnn`: a small BatchNorm CNN for tests and CPU runs (not from a paper):
  three 3x3 convolutions (``width``, ``2 width``, ``2 width`` channels; strides 1, 2,
  2; PyTorch padding 1; no conv bias since BatchNorm's shift replaces it), each
  followed by BatchNorm and ReLU, then flatten -> Linear with bias. PyTorch's default
  init (:mod:`jgi.models.layers`).

BatchNorm as ``torch.nn.BatchNorm2d`` in training mode: per channel, the mean and the
*biased* variance over (batch, H, W), eps 1e-5, scale 1 and shift 0 at init. That is
what a client computes its update with (FL clients train, so their forward pass
normalises with their own batch's statistics), so ``model.forward`` is training mode
and a batch-size-1 forward normalises over H x W only. Running statistics follow
PyTorch: ``running = (1 - momentum) running + momentum batch`` with momentum 0.1 (or
the cumulative average) and the *unbiased* batch variance
(:func:`update_running_stats`); they start at mean 0 and variance 1
(:func:`init_running_stats`).

The stats pytree (what :attr:`BNModel.forward_stats` returns next to the logits and
what the server knows as running statistics) is ``{layer name: {"mean": (C,), "var":
(C,)}}`` with the biased batch variance, the quantity DeepInversion / GradInversion
compare with the running variance.

Not supported (raise): dropout and the PRECODE/CVB bottlenecks (``sample_noise``
returns ``{}``), and an evaluation-mode forward with the running statistics (nothing in
jgi needs it yet).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jgi.models import layers
from jgi.models.interface import Model, check_noise_keys, check_options, no_noise
from jgi.models.resnet import (BLOCKS, POOL_KERNEL, POOL_PAD, POOL_STRIDE, STEM_KERNEL,
                               STEM_PAD, STEM_STRIDE, WIDTHS, _pad, conv_init_kaiming,
                               max_pool)

BN_EPS = 1e-5  # torch.nn.BatchNorm2d default
BN_MOMENTUM = 0.1  # torch.nn.BatchNorm2d default

Stats = dict  # {layer: {"mean": (C,), "var": (C,)}}


@dataclasses.dataclass(frozen=True)
class BNModel(Model):
    """A :class:`~jgi.models.interface.Model` with BatchNorm layers.

    Attributes:
      forward_stats: ``(params, x) -> (logits, stats)``: the training-mode forward pass
        and the per-layer batch statistics (see the module docstring).
      bn_layers: names of the BatchNorm layers, in forward order (the keys of stats).
      stat_counts: ``(params, x_shape) -> {layer: batch * H * W}``, how many values each
        layer's statistics average over (for PyTorch's unbiased running variance).
    """

    forward_stats: Callable[[Any, jax.Array], tuple[jax.Array, Stats]] | None = None
    bn_layers: tuple[str, ...] = ()
    stat_counts: Callable[[Any, tuple[int, ...]], dict[str, int]] | None = None


def bn_init(channels: int) -> dict:
    return {"scale": jnp.ones((channels,), jnp.float32),
            "bias": jnp.zeros((channels,), jnp.float32)}


def batch_norm(params: dict, x: jax.Array, *, name: str = "batch_norm"):
    """Training-mode BatchNorm2d of NHWC ``x``; returns ``(y, {"mean", "var"})``.

    Mean and biased variance per channel over (batch, H, W), as ``torch.nn.BatchNorm2d``
    normalises in training mode, eps 1e-5, then the per-channel scale and shift.
    """
    if x.ndim != 4 or x.shape[-1] != params["scale"].shape[0]:
        raise ValueError(f"{name}: expected (batch, H, W, {params['scale'].shape[0]}), got "
                         f"{tuple(x.shape)}.")
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
    y = (x - mean) * lax.rsqrt(var + BN_EPS) * params["scale"] + params["bias"]
    return y, {"mean": mean, "var": var}


def init_running_stats(model: BNModel, params: Any, input_shape: tuple[int, ...]) -> Stats:
    """PyTorch's initial running statistics: mean 0 and variance 1 in every channel."""
    shapes = jax.eval_shape(lambda p: model.forward_stats(p, jnp.zeros((2, *input_shape))),
                            params)[1]
    return {k: {"mean": np.zeros(v["mean"].shape, np.float32),
                "var": np.ones(v["var"].shape, np.float32)} for k, v in shapes.items()}


def update_running_stats(running: Stats, batch: Stats, count: int | dict[str, int],
                         momentum: float | None = BN_MOMENTUM, seen: int = 0) -> Stats:
    """One PyTorch running-statistics update from a batch's statistics.

    Args:
      running: the current running statistics.
      batch: the batch statistics :attr:`BNModel.forward_stats` returned (biased
        variance).
      count: the number of values each channel's statistics were computed over (batch x
        H x W of that layer), for PyTorch's unbiased correction ``count / (count - 1)``;
        a dict per layer (:attr:`BNModel.stat_counts`) or one int for every layer.
      momentum: PyTorch's momentum (0.1), or None for PyTorch's cumulative moving
        average (``momentum=None`` in ``BatchNorm2d``: factor ``1 / (seen + 1)``).
      seen: batches already averaged into ``running`` (only for ``momentum=None``).
    """
    factor = 1.0 / (seen + 1.0) if momentum is None else momentum

    def one(name):
        n = count[name] if isinstance(count, dict) else count
        unbiased = batch[name]["var"] * (n / max(n - 1, 1))
        return {"mean": (1 - factor) * running[name]["mean"] + factor * batch[name]["mean"],
                "var": (1 - factor) * running[name]["var"] + factor * unbiased}
    return {name: one(name) for name in running}


def _running_step(model, counts, momentum, running, params, x, seen):
    return update_running_stats(running, model.forward_stats(params, x)[1], counts, momentum,
                                seen)


def estimate_running_stats(model: BNModel, params: Any, batches, *,
                           momentum: float | None = None) -> Stats:
    """Running statistics after forward passes over ``batches`` in training mode.

    What the server holds after the clients trained with these parameters, starting
    from :func:`init_running_stats` and updating after each batch
    (:func:`update_running_stats`). The default ``momentum=None`` is PyTorch's
    cumulative average, the population statistics of the batches seen (with
    momentum 0.1 a few batches leave most of the initial mean 0 / variance 1 in place:
    (0.9)^8 = 43% after 8 batches). ``batches``: an iterable of (B, H, W, C) arrays.
    """
    running, seen, step = None, 0, None
    for x in batches:
        x = jnp.asarray(x)
        if running is None:
            running = init_running_stats(model, params, x.shape[1:])
            step = jax.jit(functools.partial(_running_step, model,
                                             model.stat_counts(params, x.shape), momentum))
        running = step(running, params, x, seen)
        seen += 1
    if running is None:
        raise ValueError("estimate_running_stats: no batches given.")
    return running


def _make(name: str, init, apply, options: tuple, layer_order: tuple,
          bn_layers: tuple) -> BNModel:
    """``apply(params, x, sizes)`` fills the dict ``sizes`` (or nothing when None)."""
    def forward(params, x, noise):
        check_noise_keys(name, noise, dropout=0.0, bottleneck=None)
        logits, _ = apply(params, x, None)
        return logits, jnp.zeros((), jnp.float32)

    def forward_stats(params, x):
        return apply(params, x, None)

    def stat_counts(params, x_shape):
        sizes = {}
        jax.eval_shape(lambda p: apply(p, jnp.zeros(x_shape, jnp.float32), sizes), params)
        return sizes

    return BNModel(name=name, init=init, forward=forward, sample_noise=no_noise,
                   classifier="dense", layer_order=layer_order, options=options,
                   forward_stats=forward_stats, bn_layers=bn_layers, stat_counts=stat_counts)


def resnet18_bn(num_classes: int = 10, conv_impl: str = "patches",
                widths: tuple[int, ...] = WIDTHS, blocks: tuple[int, ...] = BLOCKS) -> BNModel:
    """ResNet-18 with BatchNorm (torchvision's ``resnet18``); see the module docstring.

    Args:
      num_classes: outputs of the classifier.
      conv_impl: "patches" (fast under vmap) or "lax".
      widths, blocks: as :func:`jgi.models.resnet.resnet18` (smaller ResNets for tests).
    """
    check_options("resnet18_bn", conv_impl=conv_impl, conv_impls=layers.CONV_IMPLS,
                  bottleneck=None, bottlenecks=(), dropout=0.0)
    if len(widths) != len(blocks) or not widths or min(blocks) < 1:
        raise ValueError(f"resnet18_bn: widths {widths} and blocks {blocks} must have the "
                         "same non-zero length and at least one block per stage.")
    bn_names = ["stem"]
    for li, n in enumerate(blocks):
        for bi in range(n):
            base = f"layer{li + 1}.block{bi}"
            bn_names += [f"{base}.norm1", f"{base}.norm2"]
            if li > 0 and bi == 0:  # stride 2: the 1x1 shortcut conv and its norm
                bn_names.append(f"{base}.downsample")

    def init(key, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"resnet18_bn: input_shape must be (H, W, C), got {input_shape}.")
        k_stem, k_layers, k_dense = jax.random.split(key, 3)
        params = {"stem": {"conv": conv_init_kaiming(k_stem, STEM_KERNEL, input_shape[-1],
                                                     widths[0]),
                           "norm": bn_init(widths[0])}}
        cin = widths[0]
        for li, (cout, n) in enumerate(zip(widths, blocks, strict=True)):
            layer = {}
            for bi in range(n):
                k1, k2, k3 = jax.random.split(
                    jax.random.fold_in(jax.random.fold_in(k_layers, li), bi), 3)
                stride = 2 if (li > 0 and bi == 0) else 1
                block = {"conv1": conv_init_kaiming(k1, 3, cin, cout), "norm1": bn_init(cout),
                         "conv2": conv_init_kaiming(k2, 3, cout, cout), "norm2": bn_init(cout)}
                if stride != 1 or cin != cout:
                    block["downsample"] = {"conv": conv_init_kaiming(k3, 1, cin, cout),
                                           "norm": bn_init(cout)}
                layer[f"block{bi}"] = block
                cin = cout
            params[f"layer{li + 1}"] = layer
        params["dense"] = layers.dense_init(k_dense, widths[-1], num_classes)
        return params

    def conv(p, x, stride, pad, name):
        return layers.conv(p, _pad(x, pad), stride=stride, padding="VALID", impl=conv_impl,
                           name=name)

    def apply(params, x, sizes):
        cin = params["stem"]["conv"]["w"].shape[2]
        if x.ndim != 4 or x.shape[-1] != cin:
            raise ValueError(f"resnet18_bn: the params expect x of shape (batch, H, W, {cin}), "
                             f"got {tuple(x.shape)}.")
        stats = {}

        def bn(p, h, name):
            if sizes is not None:
                sizes[name] = h.shape[0] * h.shape[1] * h.shape[2]
            h, stats[name] = batch_norm(p, h, name=f"resnet18_bn.{name}")
            return h

        x = conv(params["stem"]["conv"], x, STEM_STRIDE, STEM_PAD, "stem.conv")
        x = jax.nn.relu(bn(params["stem"]["norm"], x, "stem"))
        x = max_pool(x, POOL_KERNEL, POOL_STRIDE, POOL_PAD, conv_impl)
        for li, n in enumerate(blocks):
            for bi in range(n):
                p = params[f"layer{li + 1}"][f"block{bi}"]
                base = f"layer{li + 1}.block{bi}"
                stride = 2 if (li > 0 and bi == 0) else 1
                out = conv(p["conv1"], x, stride, 1, f"{base}.conv1")
                out = jax.nn.relu(bn(p["norm1"], out, f"{base}.norm1"))
                out = conv(p["conv2"], out, 1, 1, f"{base}.conv2")
                out = bn(p["norm2"], out, f"{base}.norm2")
                if "downsample" in p:
                    x = bn(p["downsample"]["norm"],
                           conv(p["downsample"]["conv"], x, stride, 0, f"{base}.downsample"),
                           f"{base}.downsample")
                x = jax.nn.relu(out + x)
        x = jnp.mean(x, axis=(1, 2))
        return layers.dense(params["dense"], x, name="resnet18_bn.dense"), stats

    order = ("stem", *(f"layer{i + 1}" for i in range(len(widths))), "dense")
    options = (("num_classes", num_classes), ("conv_impl", conv_impl), ("widths", widths),
               ("blocks", blocks))
    return _make("resnet18_bn", init, apply, options, order, tuple(bn_names))


def bn_cnn(num_classes: int = 10, width: int = 16, conv_impl: str = "patches") -> BNModel:
    """The small BatchNorm CNN of the module docstring (tests and CPU runs).

    Args:
      num_classes: outputs of the classifier.
      width: channels of the first convolution (then 2 width, 2 width).
      conv_impl: "patches" or "lax".
    """
    check_options("bn_cnn", conv_impl=conv_impl, conv_impls=layers.CONV_IMPLS,
                  bottleneck=None, bottlenecks=(), dropout=0.0)
    if width < 1:
        raise ValueError(f"bn_cnn: width must be >= 1, got {width}.")
    chans, strides = (width, 2 * width, 2 * width), (1, 2, 2)

    def out_hw(size):
        for s in strides:
            size = (size + 2 - 3) // s + 1
        return size

    def init(key, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"bn_cnn: input_shape must be (H, W, C), got {input_shape}.")
        keys = jax.random.split(key, 4)
        params, cin = {}, input_shape[-1]
        for i, c in enumerate(chans):
            params[f"conv{i}"] = {**layers.conv_init(keys[i], 3, cin, c, bias=False),
                                  "norm": bn_init(c)}
            cin = c
        feats = out_hw(input_shape[0]) * out_hw(input_shape[1]) * chans[-1]
        params["dense"] = layers.dense_init(keys[3], feats, num_classes)
        return params

    def apply(params, x, sizes):
        cin = params["conv0"]["w"].shape[2]
        if x.ndim != 4 or x.shape[-1] != cin:
            raise ValueError(f"bn_cnn: the params expect x of shape (batch, H, W, {cin}), "
                             f"got {tuple(x.shape)}.")
        stats = {}
        for i, s in enumerate(strides):
            p = params[f"conv{i}"]
            x = layers.conv({"w": p["w"]}, _pad(x, 1), stride=s, padding="VALID",
                            impl=conv_impl, name=f"bn_cnn.conv{i}")
            if sizes is not None:
                sizes[f"conv{i}"] = x.shape[0] * x.shape[1] * x.shape[2]
            x, stats[f"conv{i}"] = batch_norm(p["norm"], x, name=f"bn_cnn.conv{i}.norm")
            x = jax.nn.relu(x)
        x = x.reshape(x.shape[0], -1)
        return layers.dense(params["dense"], x, name="bn_cnn.dense"), stats

    options = (("num_classes", num_classes), ("width", width), ("conv_impl", conv_impl))
    return _make("bn_cnn", init, apply, options,
                 ("conv0", "conv1", "conv2", "dense"), tuple(f"conv{i}" for i in range(3)))


__all__ = ["BNModel", "BN_EPS", "BN_MOMENTUM", "batch_norm", "bn_cnn", "estimate_running_stats",
           "init_running_stats", "resnet18_bn", "update_running_stats"]
