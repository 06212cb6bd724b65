"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016).

As a gradient transformation on *per-example* gradients (a leading example axis, as
``jax.vmap(jax.grad(loss))`` produces): clip each example's gradient to L2 norm at most
``clip_norm`` (tau), sum over examples, add Gaussian noise Xi ~ N(0, sigma^2 tau^2) per
entry, divide by the batch size. The core paper uses tau = 20 and sigma in {1e-4, 1e-3}.

The noise is an explicit input: pass ``key=`` to sample it, or ``noise=`` to supply it
(the client's true noise for WIIG, an attacker's estimate for DPIA). No key is hidden in
the transformation's state. ``epsilon`` reports the privacy guarantee through
dp-accounting (optional dependency, host-side NumPy).

Sharp edge: sigma = 1e-3 is the paper's setting for privacy *against reconstruction*;
as a formal (epsilon, delta) guarantee it is vacuous (epsilon is astronomically large).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings.

    Attributes:
      clip_norm: per-example L2 bound tau (paper: 20).
      noise_multiplier: sigma; the noise standard deviation is sigma * tau (paper: 1e-4
        in the ablation, 1e-3 in Table 1).
    """

    clip_norm: float = 20.0
    noise_multiplier: float = 1e-4

    def __post_init__(self):
        if self.clip_norm <= 0:
            raise ValueError(f"DP clip_norm must be > 0, got {self.clip_norm}.")
        if self.noise_multiplier < 0:
            raise ValueError(f"DP noise_multiplier must be >= 0, got {self.noise_multiplier}.")

    @property
    def noise_std(self) -> float:
        return self.clip_norm * self.noise_multiplier


def global_norms(per_example: Any) -> jax.Array:
    """L2 norm of each example's whole gradient, (B,)."""
    squares = [jnp.sum(jnp.square(leaf.reshape(leaf.shape[0], -1)), axis=1)
               for leaf in jax.tree.leaves(per_example)]
    return jnp.sqrt(sum(squares))


def clip_factors(norms: jax.Array, clip_norm: float) -> jax.Array:
    """Each example's clipping factor ``min(1, tau / norm)``; a zero norm gives 1."""
    return jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))


def clip_per_example(per_example: Any, clip_norm: float) -> Any:
    """Scales each example's gradient to L2 norm at most ``clip_norm``.

    Factor ``min(1, tau / norm)`` (Abadi et al.); a zero gradient stays zero.
    """
    factor = clip_factors(global_norms(per_example), clip_norm)
    return jax.tree.map(lambda g: g * factor.reshape((-1,) + (1,) * (g.ndim - 1)), per_example)


def sample_noise(key: jax.Array, like: Any, config: DPConfig) -> Any:
    """Xi ~ N(0, (sigma tau)^2) with the structure and shapes of ``like`` (one update)."""
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(key, len(leaves))
    noise = [config.noise_std * jax.random.normal(k, jnp.shape(leaf), jnp.float32)
             for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, noise)


class PerExample(NamedTuple):
    """Gradients with a leading example axis, as ``jax.vmap(jax.grad(loss))`` gives them."""

    grads: Any


class ClippedSum(NamedTuple):
    """``sum_i min(1, tau / |g_i|) g_i`` over a batch of ``count`` examples.

    What :func:`clip_and_sum` makes of :class:`PerExample` gradients; a caller that
    computes the clipped sum another way (``jgi.fl.client.clipped_gradient_sum``, one
    gradient of a factor-weighted loss, never materialising the per-example copies)
    hands it to the chain in this form and the clipping stage passes it on.
    """

    grads: Any
    count: int


def clip_and_sum(per_example: Any, clip_norm: float) -> ClippedSum:
    """Clips each example's gradient to L2 norm ``clip_norm`` and sums over examples."""
    clipped = clip_per_example(per_example, clip_norm)
    count = jax.tree.leaves(per_example)[0].shape[0]
    return ClippedSum(jax.tree.map(lambda g: jnp.sum(g, axis=0), clipped), count)


def noisy_mean(clipped_sum: Any, noise: Any, batch: int) -> Any:
    """DP-SGD's last step: ``(sum of clipped gradients + noise) / batch size``."""
    return jax.tree.map(lambda g, xi: (g + xi) / batch, clipped_sum, noise)


def privatize(per_example: Any, config: DPConfig, noise: Any) -> Any:
    """DP-SGD aggregation: clip each example, sum, add ``noise``, divide by batch size."""
    clipped = clip_and_sum(per_example, config.clip_norm)
    return noisy_mean(clipped.grads, noise, clipped.count)


class DPState(NamedTuple):
    """DP-SGD keeps no state (the key is an argument, never state)."""


def clip_per_example_grads(clip_norm: float) -> optax.GradientTransformation:
    """Per-example clipping as an optax stage: :class:`PerExample` -> :class:`ClippedSum`.

    A :class:`ClippedSum` (already clipped by a fused implementation) passes unchanged.
    Anything else is refused: clipping needs each example's own gradient.
    """

    def init(params):
        del params
        return DPState()

    def update(updates, state, params=None):
        del params
        if isinstance(updates, ClippedSum):
            return updates, state
        if not isinstance(updates, PerExample):
            raise ValueError(
                "DP-SGD clips each example's gradient: pass dp.PerExample(grads) (a leading "
                "example axis, e.g. jax.vmap(jax.grad(loss))) or an already clipped "
                f"dp.ClippedSum, not a plain {type(updates).__name__} of averaged gradients.")
        return clip_and_sum(updates.grads, clip_norm), state

    return optax.GradientTransformation(init, update)


def add_noise_and_average(config: DPConfig) -> optax.GradientTransformationExtraArgs:
    """DP-SGD's noise as an optax stage: :class:`ClippedSum` -> (sum + Xi) / batch size.

    ``update(clipped_sum, state, params=None, *, key=None, noise=None)``: exactly one of
    ``key`` (sample Xi ~ N(0, (sigma tau)^2)) or ``noise`` (use it as given: the client's
    own noise, or an attacker's estimate) must be passed.
    """

    def init(params):
        del params
        return DPState()

    def update(updates, state, params=None, *, key=None, noise=None, **extra):
        del params, extra
        if not isinstance(updates, ClippedSum):
            raise ValueError("add_noise_and_average needs the clipped sum of a batch "
                             f"(dp.ClippedSum), got {type(updates).__name__}; put "
                             "clip_per_example_grads before it.")
        if (key is None) == (noise is None):
            raise ValueError("DP-SGD's noise stage needs exactly one of key= (sample the "
                             "noise) or noise= (supply it).")
        if noise is None:
            noise = sample_noise(key, updates.grads, config)
        return noisy_mean(updates.grads, noise, updates.count), state

    return optax.GradientTransformationExtraArgs(init, update)


def dp_sgd(config: DPConfig) -> optax.GradientTransformationExtraArgs:
    """DP-SGD aggregation as one optax chain: clip each example, sum, add noise, average.

    ``update(dp.PerExample(per_example_grads), state, params=None, *, key=None,
    noise=None)`` returns the privatised mean gradient (no example axis).
    """
    return optax.chain(clip_per_example_grads(config.clip_norm), add_noise_and_average(config))


def epsilon(config: DPConfig, *, steps: int, sampling_rate: float, delta: float = 1e-5,
            accountant: str = "rdp") -> float:
    """(epsilon, delta)-DP of DP-SGD with Poisson sampling, through dp-accounting.

    Args:
      config: the DP-SGD settings (only the noise multiplier matters).
      steps: number of noisy steps a client takes.
      sampling_rate: batch size / client dataset size.
      delta: target delta.
      accountant: "rdp" or "pld".

    Returns:
      epsilon (``inf`` when the noise is too small for any guarantee).
    """
    try:
        import dp_accounting  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError("epsilon needs dp-accounting: pip install 'jgi[dp]'") from e
    if config.noise_multiplier == 0:
        return float("inf")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sampling_rate, dp_accounting.GaussianDpEvent(config.noise_multiplier)), steps)
    if accountant == "rdp":
        acc = dp_accounting.rdp.RdpAccountant()
    elif accountant == "pld":
        acc = dp_accounting.pld.PLDAccountant()
    else:
        raise ValueError(f"Unknown accountant {accountant!r}; valid: rdp, pld.")
    acc.compose(event)
    return float(acc.get_epsilon(delta))
