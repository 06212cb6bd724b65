"""Reconstruction-quality metrics, per image, on images in [0, 1].

- ``ssim``: Gaussian-window SSIM (Wang et al. 2004) with an 11-tap window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 1, through dm-pix (``valid`` filtering, averaged
  over pixels and channels), as skimage computes it with ``gaussian_weights=True``.
- ``psnr`` in dB and ``mse``, through dm-pix.
- ``attack_success_rate``: the fraction of victims with SSIM above 0.5 (core paper,
  section 5.2, after Wagner et al. 2018).
- ``ssim_authors``: SSIM as the ablation paper's authors' code computes it
  (AUTHORS-CODE.md: torchmetrics' SSIM, Gaussian window 11 / sigma 1.5, per image,
  after **per-image min-max scaling of both images over all channels**, on the
  normalised tensors). torchmetrics reflect-pads by 5 pixels, filters and crops the 5
  border pixels again, which leaves exactly the ``valid`` windows that ``ssim`` averages;
  after the scaling both images span [0, 1], so its inferred data range is 1. What
  differs from ``ssim`` is the scaling: it forgives a reconstruction any positive gain
  and offset (a faint or washed-out copy scores 1), and on CIFAR-10 the per-channel
  normalisation before the scaling weights the channels differently. A constant image
  (max = min; torch would divide by 0) is scaled to all zeros here.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

ASR_THRESHOLD = 0.5


def _check(a, b):
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"Expected two image batches of equal shape (N, H, W, C), got {a.shape} and {b.shape}.")
    return a, b


@jax.jit
def _ssim(a, b):
    return dm_pix.ssim(a, b, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


def ssim(originals, reconstructions) -> np.ndarray:
    """Per-image SSIM (N,) of two (N, H, W, C) batches in [0, 1]."""
    return np.asarray(_ssim(*_check(originals, reconstructions)))


@jax.jit
def _minmax_scale(x):
    lo = jnp.min(x, axis=(1, 2, 3), keepdims=True)
    span = jnp.max(x, axis=(1, 2, 3), keepdims=True) - lo
    return jnp.where(span > 0, (x - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def minmax_scale(x) -> jax.Array:
    """Each image of (N, H, W, C) mapped to [0, 1] by its own min and max over all pixels
    and channels; a constant image becomes 0."""
    return _minmax_scale(jnp.asarray(x, jnp.float32))


def ssim_authors(originals, reconstructions, mean=None, std=None) -> np.ndarray:
    """Per-image SSIM (N,) as the ablation paper's authors compute it (module docstring).

    Args:
      originals, reconstructions: (N, H, W, C) images in [0, 1].
      mean, std: the per-channel normalisation the model saw (``DatasetInfo.mean``,
        ``.std``); the authors scale the normalised tensors. None: the images as given
        (the same result whenever every channel shares one mean and std, e.g. MNIST).
    """
    a, b = _check(originals, reconstructions)
    if (mean is None) != (std is None):
        raise ValueError("ssim_authors: give both mean and std (the normalisation) or "
                         "neither.")
    if mean is None:
        mean, std = 0.0, 1.0
    return np.asarray(_ssim_authors(a, b, jnp.asarray(mean, jnp.float32),
                                    jnp.asarray(std, jnp.float32)))


@jax.jit
def _ssim_authors(a, b, mean, std):
    return _ssim(_minmax_scale((a - mean) / std), _minmax_scale((b - mean) / std))


def mse(originals, reconstructions) -> np.ndarray:
    """Per-image mean squared error (N,)."""
    return np.asarray(dm_pix.mse(*_check(originals, reconstructions)))


def match_by_ssim(originals, reconstructions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best one-to-one matching of reconstructions to originals by SSIM.

    For attacks whose reconstructions come in no particular order (a client's whole
    batch, a secure aggregate): the Hungarian assignment maximising the summed SSIM.

    Args:
      originals: (n, H, W, C) in [0, 1].
      reconstructions: (m, H, W, C) in [0, 1].

    Returns:
      ``(rows, cols, s)``: ``min(n, m)`` matched pairs (original ``rows[k]`` with
      reconstruction ``cols[k]``, rows ascending) and the (n, m) SSIM matrix.
    """
    from scipy.optimize import linear_sum_assignment  # slow to import; only here

    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    n, m = originals.shape[0], reconstructions.shape[0]
    s = ssim(np.repeat(originals, m, 0), np.tile(reconstructions, (n, 1, 1, 1))).reshape(n, m)
    rows, cols = linear_sum_assignment(-s)
    return rows, cols, s


def matched_ssim_psnr(originals, reconstructions) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and PSNR of the matched pairs of :func:`match_by_ssim` (``min(n, m)`` each)."""
    rows, cols, s = match_by_ssim(originals, reconstructions)
    return s[rows, cols], psnr(np.asarray(originals)[rows],
                               np.asarray(reconstructions)[cols])


def psnr(originals, reconstructions) -> np.ndarray:
    """Per-image PSNR in dB (N,) for data range 1 (inf for identical images)."""
    return np.asarray(dm_pix.psnr(*_check(originals, reconstructions)))


def attack_success_rate(ssims, threshold: float = ASR_THRESHOLD) -> float:
    """Fraction of victims whose reconstruction has SSIM above ``threshold``."""
    ssims = np.asarray(ssims)
    if ssims.size == 0:
        raise ValueError("attack_success_rate of no victims is undefined.")
    return float(np.mean(ssims > threshold))


def summarize(originals, reconstructions, mean=None, std=None) -> dict:
    """All metrics for one victim set: means, stds, ASR and the per-victim SSIMs, with
    jgi's SSIM and the authors' (``*_authors``; ``mean``/``std`` as in
    :func:`ssim_authors`)."""
    s = ssim(originals, reconstructions)
    sa = ssim_authors(originals, reconstructions, mean, std)
    p = psnr(originals, reconstructions)
    m = mse(originals, reconstructions)
    finite_p = p[np.isfinite(p)]
    return {
        "ssim_mean": float(np.mean(s)),
        "ssim_std": float(np.std(s)),
        "psnr_mean": float(np.mean(finite_p)) if finite_p.size else float("inf"),
        "psnr_std": float(np.std(finite_p)) if finite_p.size else 0.0,
        "mse_mean": float(np.mean(m)),
        "mse_std": float(np.std(m)),
        "asr": attack_success_rate(s),
        "per_victim_ssim": [float(v) for v in s],
        "per_victim_psnr": [float(v) for v in p],
        "per_victim_mse": [float(v) for v in m],
        "ssim_authors_mean": float(np.mean(sa)),
        "ssim_authors_std": float(np.std(sa)),
        "asr_authors": attack_success_rate(sa),
        "per_victim_ssim_authors": [float(v) for v in sa],
    }
