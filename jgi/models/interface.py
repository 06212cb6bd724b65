"""The model interface every jgi model follows.

A model is a bundle of pure functions (no hidden state, no implicit randomness):

    params = model.init(key, input_shape)               # input_shape = (H, W, C)
    noise = model.sample_noise(key, input_shape, batch)  # the model's randomness
    logits, penalty = model.forward(params, x, noise)    # x: (batch, H, W, C)
    logits = model.apply(params, x, noise)

``noise`` holds every random quantity of a forward pass as explicit arrays with a
leading batch axis: ``{"dropout": {layer: keep-mask}, "eps": bottleneck noise}``, the
keys present only when the model has that layer. A caller can sample it from a key *or
supply* it: that is what lets an attacker mimic, estimate or ignore a client's
randomness. A deterministic model's noise is ``{}``. ``penalty`` is the term the model
adds to the training loss (beta times the bottleneck's KL; 0 without a bottleneck).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import jax

from jgi import checks

Params = Any  # a pytree of arrays
Noise = Any  # a pytree of arrays, possibly empty


@dataclasses.dataclass(frozen=True)
class Model:
    """A model as pure functions.

    Attributes:
      name: registry name, e.g. "cnn".
      init: ``(key, input_shape) -> params``.
      forward: ``(params, x, noise) -> (logits, penalty)``, x of shape (batch, H, W, C).
        Wrapped at construction with :func:`check_input`: a wrong ``x`` (rank, dtype,
        channel count or feature count of the first layer) raises an error naming it,
        the expected and the given shape (trace time only, no run-time cost).
      sample_noise: ``(key, input_shape, batch_size) -> noise`` for one forward pass.
      classifier: key of the last (fully connected) layer in ``params``; its gradient
        reveals the label (iDLG).
      layer_order: top-level keys of ``params`` in forward order (with a bottleneck,
        :meth:`leaves_before_bottleneck_decoder` reads where it sits).
      dropout: dropout rate (0 when the model has no dropout).
      bottleneck: "precode", "cvb" or None.
      options: the hashable options the model was built with, for records.
    """

    name: str
    init: Callable[[jax.Array, tuple[int, ...]], Params]
    forward: Callable[[Params, jax.Array, Noise], tuple[jax.Array, jax.Array]]
    sample_noise: Callable[[jax.Array, tuple[int, ...], int], Noise]
    classifier: str
    layer_order: tuple[str, ...] = ()
    dropout: float = 0.0
    bottleneck: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        # ``forward`` checks its input at the boundary (:func:`check_input`); the wrapper
        # is marked so that ``dataclasses.replace`` does not wrap it twice.
        if not getattr(self.forward, "_jgi_checked", False):
            object.__setattr__(self, "forward",
                               _checked_forward(self.name, self.layer_order, self.forward))

    def apply(self, params: Params, x: jax.Array, noise: Noise) -> jax.Array:
        """Logits only (``forward``'s input checks apply)."""
        return self.forward(params, x, noise)[0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.options)}

    @property
    def stochastic(self) -> bool:
        return self.dropout > 0 or self.bottleneck is not None

    def leaves_before_bottleneck_decoder(self, params: Params) -> list[bool]:
        """Which leaves of ``params`` act before the bottleneck's decoder.

        True for every layer before the bottleneck and for the bottleneck's encoder (the
        parts that compute ``mu`` and ``sigma``); False for its decoder and every later
        layer, whose inputs are computed from the sampled latent and whose gradients are
        therefore the most stochastic. Partial Inverting Gradients (PIG; Scheliga,
        Maeder, Seeland 2024b) keeps the True leaves in its gradient distance, as the
        authors' ``ignore_gradient_layers`` lists do. For the CNN with a CVB after block
        0 that is conv0 and the CVB's ``mu`` and ``sigma`` convolutions.

        Args:
          params: this model's parameters (arrays or ``jax.ShapeDtypeStruct``s).

        Returns:
          One bool per leaf, in ``jax.tree.leaves(params)`` order.

        Raises:
          ValueError: if the model has no bottleneck.
        """
        if self.bottleneck is None:
            raise ValueError(f"{self.name} has no bottleneck (PRECODE or CVB), so no layer "
                             "comes before a bottleneck decoder; build it with "
                             "bottleneck='precode' or 'cvb'.")
        order = list(self.layer_order)
        after = set(order[order.index("bottleneck") + 1:])
        keep = []
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
            keys = [getattr(k, "key", None) for k in path]
            top = keys[0]
            keep.append(not (top in after or (top == "bottleneck" and "decoder" in keys)))
        return keep


def first_weight(params: Params, layer_order: tuple[str, ...]) -> tuple[str, Any] | None:
    """The first layer's name and weight (``("conv0", w)``), or None when not readable.

    The first leaf named ``w`` under ``params[layer_order[0]]``: a convolution kernel
    (kh, kw, C_in, C_out) or a dense matrix (features, units). None for params without
    that layer (a model that is not a dict of layers, a layer without ``w``).
    """
    if not layer_order or not isinstance(params, Mapping) or layer_order[0] not in params:
        return None
    first = layer_order[0]
    for path, leaf in jax.tree_util.tree_flatten_with_path(params[first])[0]:
        if path and getattr(path[-1], "key", None) == "w":
            inner = jax.tree_util.keystr(path[:-1])
            return f"{first}{inner}", leaf
    return None


def input_mismatch(name: str, layer_order: tuple[str, ...], params: Params,
                   x: jax.Array) -> str | None:
    """What the params' first layer needs of ``x`` that ``x`` lacks, or None.

    The channel count is read off the first layer's kernel (C_in) when it is a
    convolution; for a dense first layer, H * W * C must equal its input features.
    """
    found = first_weight(params, layer_order)
    if found is None:
        return None
    label, w = found
    w_shape, x_shape = checks.shape_of(w), checks.shape_of(x)
    where = f"{name}.forward"
    if len(w_shape) == 4 and x_shape[-1] != w_shape[2]:
        return (f"{where}: x must be (batch, H, W, C) with C = {w_shape[2]} for the first "
                f"layer {name}.{label} (kernel {w_shape}): expected x of shape "
                f"(batch, H, W, {w_shape[2]}), got {x_shape}.")
    if len(w_shape) == 2 and math.prod(x_shape[1:]) != w_shape[0]:
        return (f"{where}: x must have H * W * C = {w_shape[0]} for the first layer "
                f"{name}.{label} (weights {w_shape}): expected x of shape (batch, H, W, C) "
                f"with {w_shape[0]} features, got {x_shape} "
                f"({math.prod(x_shape[1:])} features).")
    return None


def check_input(name: str, layer_order: tuple[str, ...], params: Params,
                x: jax.Array) -> None:
    """``x`` is a floating (batch, H, W, C) batch the params' first layer accepts.

    Trace-time only (static shapes).

    Raises:
      ValueError: naming the model, ``x``, the expected and the given shape.
      TypeError: ``x`` is not floating point.
    """
    where = f"{name}.forward"
    checks.rank(x, 4, name="x", where=where, layout="(batch, H, W, C)")
    checks.kind(x, float, name="x", where=where, what="normalised images")
    mismatch = input_mismatch(name, layer_order, params, x)
    if mismatch is not None:
        raise ValueError(mismatch)


def _checked_forward(name: str, layer_order: tuple[str, ...], forward: Callable) -> Callable:
    """``forward`` behind :func:`check_input`.

    Rank and dtype are checked first. When the first layer does not fit ``x``, the
    model's forward is still traced first, so that a model's own, more specific message
    (a ViT's token count, a layer's name) leads; the first-layer message is appended.
    """
    @functools.wraps(forward)
    def checked(params, x, *args, **kwargs):
        where = f"{name}.forward"
        checks.rank(x, 4, name="x", where=where, layout="(batch, H, W, C)")
        checks.kind(x, float, name="x", where=where, what="normalised images")
        mismatch = input_mismatch(name, layer_order, params, x)
        if mismatch is None:
            return forward(params, x, *args, **kwargs)
        try:
            forward(params, x, *args, **kwargs)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{e} [{mismatch}]") from e
        raise ValueError(mismatch)

    checked._jgi_checked = True  # pylint: disable=protected-access
    return checked


def no_noise(key: jax.Array, input_shape: tuple[int, ...], batch_size: int) -> dict:
    """``sample_noise`` of a deterministic model."""
    del key, input_shape, batch_size
    return {}


def check_options(name: str, *, conv_impl: str, conv_impls: tuple[str, ...],
                  bottleneck: str | None, bottlenecks: tuple[str, ...],
                  dropout: float) -> None:
    """Validates the options every convolutional model factory shares.

    Raises:
      ValueError: naming the model, the bad value and what is valid.
    """
    if conv_impl not in conv_impls:
        raise ValueError(f"{name}: unknown conv_impl {conv_impl!r}; valid: "
                         f"{', '.join(conv_impls)}.")
    if bottleneck not in (None, *bottlenecks):
        raise ValueError(f"{name}: unknown bottleneck {bottleneck!r}; the {name} supports "
                         f"{', '.join(bottlenecks)}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}: dropout rate must be in [0, 1), got {dropout}.")


def check_noise_keys(name: str, noise: dict, *, dropout: float,
                     bottleneck: str | None) -> None:
    """Checks that ``noise`` holds exactly the randomness the model draws."""
    expected = ({"dropout"} if dropout > 0 else set()) | ({"eps"} if bottleneck else set())
    if set(noise) != expected:
        raise ValueError(
            f"{name}: noise has keys {sorted(noise)}, this model (dropout={dropout}, "
            f"bottleneck={bottleneck}) needs {sorted(expected)}; use "
            f"model.sample_noise(key, input_shape, batch).")
