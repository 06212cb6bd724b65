"""Reconstruction-quality metrics, per image, on images in [0, 1].

- ``ssim``: Gaussian-window SSIM (Wang et al. 2004) with an 11-tap window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 1, through dm-pix (``valid`` filtering, averaged
  over pixels and channels), as skimage computes it with ``gaussian_weights=True``.
- ``psnr`` in dB and ``mse``, through dm-pix.
- ``attack_success_rate``: the fraction of victims with SSIM above 0.5 (core paper,
  section 5.2, after Wagner et al. 2018).
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


def mse(originals, reconstructions) -> np.ndarray:
    """Per-image mean squared error (N,)."""
    return np.asarray(dm_pix.mse(*_check(originals, reconstructions)))


def psnr(originals, reconstructions) -> np.ndarray:
    """Per-image PSNR in dB (N,) for data range 1 (inf for identical images)."""
    return np.asarray(dm_pix.psnr(*_check(originals, reconstructions)))


def attack_success_rate(ssims, threshold: float = ASR_THRESHOLD) -> float:
    """Fraction of victims whose reconstruction has SSIM above ``threshold``."""
    ssims = np.asarray(ssims)
    if ssims.size == 0:
        raise ValueError("attack_success_rate of no victims is undefined.")
    return float(np.mean(ssims > threshold))


def summarize(originals, reconstructions) -> dict:
    """All metrics for one victim set: means, stds, ASR and the per-victim SSIMs."""
    s = ssim(originals, reconstructions)
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
    }
