"""Pure layer functions shared by the models: convolution and dense.

Parameters are plain dicts ``{"w": ..., "b": ...}``. Initialisation follows PyTorch's
defaults (``kaiming_uniform_(a=sqrt(5))`` for weights, which is U(-1/sqrt(fan_in),
1/sqrt(fan_in)), and the same bound for biases) because the attacks in the source
papers ran against randomly initialised PyTorch models, and the scale of the weights
changes how hard a gradient is to invert.

Convolutions have two formulations with identical results (up to float rounding):

- ``"lax"``: ``lax.conv_general_dilated``.
- ``"patches"``: the input is cut into patches by strided slicing and multiplied with
  the flattened kernel. Under ``vmap`` over victims, the per-victim weight gradient of a
  convolution then becomes a batched matrix product instead of a grouped convolution,
  which XLA runs much faster on CPU (see ``benchmarks/attack_throughput.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("patches", "lax")
PADDINGS = ("SAME", "VALID")


def _uniform(key, shape, bound):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def conv_init(key: jax.Array, kernel_size: int, in_channels: int, out_channels: int,
              bias: bool = True) -> dict:
    """Initialises a conv layer: ``w`` of shape (k, k, in, out) and ``b`` of shape (out,)."""
    fan_in = kernel_size * kernel_size * in_channels
    bound = 1.0 / math.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    params = {"w": _uniform(kw, (kernel_size, kernel_size, in_channels, out_channels), bound)}
    if bias:
        params["b"] = _uniform(kb, (out_channels,), bound)
    return params


def dense_init(key: jax.Array, in_features: int, out_features: int, bias: bool = True) -> dict:
    """Initialises a dense layer: ``w`` of shape (in, out) and ``b`` of shape (out,)."""
    bound = 1.0 / math.sqrt(in_features)
    kw, kb = jax.random.split(key)
    params = {"w": _uniform(kw, (in_features, out_features), bound)}
    if bias:
        params["b"] = _uniform(kb, (out_features,), bound)
    return params


def conv_output_size(size: int, kernel_size: int, stride: int, padding: str) -> int:
    """Spatial output size of a convolution (as ``lax`` computes it)."""
    if padding == "SAME":
        return -(-size // stride)
    if padding == "VALID":
        return (size - kernel_size) // stride + 1
    raise ValueError(f"Unknown padding {padding!r}; valid: {', '.join(PADDINGS)}.")


def _same_pads(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def extract_patches(x: jax.Array, kernel_size: int, stride: int, padding: str) -> jax.Array:
    """Cuts (B, H, W, C) into (B, Ho, Wo, k*k*C) patches, ordered (kh, kw, C).

    The ordering matches ``w.reshape(k * k * C, out)`` for ``w`` of shape (k, k, C, out).
    """
    _, h, w, _ = x.shape
    k = kernel_size
    if padding == "SAME":
        x = jnp.pad(x, ((0, 0), _same_pads(h, k, stride), _same_pads(w, k, stride), (0, 0)))
    ho = conv_output_size(h, k, stride, padding)
    wo = conv_output_size(w, k, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"Input of {h}x{w} is too small for a {k}x{k} convolution with stride {stride} and "
            f"{padding} padding."
        )
    slices = [
        lax.slice(x, (0, i, j, 0), (x.shape[0], i + stride * (ho - 1) + 1,
                                   j + stride * (wo - 1) + 1, x.shape[3]), (1, stride, stride, 1))
        for i in range(k) for j in range(k)
    ]
    patches = jnp.stack(slices, axis=3)  # (B, Ho, Wo, k*k, C)
    return patches.reshape(patches.shape[0], ho, wo, k * k * x.shape[3])


def conv(params: dict, x: jax.Array, *, stride: int, padding: str, impl: str = "patches",
         name: str = "conv") -> jax.Array:
    """2-D convolution of NHWC ``x`` with ``params["w"]`` (k, k, in, out) and optional bias.

    Args:
      params: the layer's parameters.
      x: input of shape (B, H, W, in).
      stride: stride in both spatial dimensions.
      padding: "SAME" or "VALID" (as in ``lax``).
      impl: "patches" or "lax" (same result; see the module docstring).
      name: layer name used in error messages.

    Returns:
      Output of shape (B, Ho, Wo, out).
    """
    w = params["w"]
    k, _, cin, cout = w.shape
    if x.ndim != 4 or x.shape[-1] != cin:
        raise ValueError(
            f"{name}: expected input of shape (batch, H, W, {cin}), got {tuple(x.shape)}."
        )
    if impl == "patches":
        patches = extract_patches(x, k, stride, padding)
        y = jnp.einsum("bhwp,po->bhwo", patches, w.reshape(k * k * cin, cout))
    elif impl == "lax":
        y = lax.conv_general_dilated(
            x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
        raise ValueError(f"{name}: unknown conv impl {impl!r}; valid: {', '.join(CONV_IMPLS)}.")
    if "b" in params:
        y = y + params["b"]
    return y


def dense(params: dict, x: jax.Array, *, name: str = "dense") -> jax.Array:
    """Fully connected layer on (B, in) -> (B, out)."""
    w = params["w"]
    if x.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{name}: expected input of shape (batch, {w.shape[0]}), got {tuple(x.shape)}."
        )
    y = x @ w
    if "b" in params:
        y = y + params["b"]
    return y
