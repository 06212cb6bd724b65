"""Pictures of reconstructions (matplotlib, written to PNG)."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np


def _as_display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    if img.shape[-1] == 1:
        return img[..., 0], "gray"
    return img, None


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray,
                        ssims: Sequence[float], path: str | os.PathLike, *,
                        title: str = "", max_images: int = 128, columns: int = 16) -> None:
    """Writes originals above their reconstructions, with each SSIM under it, as PNG.

    Args:
      originals, reconstructions: (N, H, W, C) in [0, 1].
      ssims: per-image SSIM (N,).
      path: output PNG.
      title: figure title.
      max_images: at most this many victims are drawn (the first ones).
      columns: victims per block row.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    n = min(len(originals), max_images)
    if n == 0:
        raise ValueError("reconstruction_grid needs at least one image.")
    columns = min(columns, n)
    blocks = math.ceil(n / columns)
    fig, axes = plt.subplots(2 * blocks, columns, figsize=(1.1 * columns, 2.5 * blocks + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        b, c = divmod(i, columns)
        img, cmap = _as_display(originals[i])
        axes[2 * b, c].imshow(img, cmap=cmap, vmin=0, vmax=1)
        img, cmap = _as_display(reconstructions[i])
        ax = axes[2 * b + 1, c]
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(f"{ssims[i]:.2f}", fontsize=7, y=-0.28)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.text(0.005, 0.5, "rows: original / reconstruction (SSIM below)", rotation=90,
             va="center", fontsize=7)
    fig.tight_layout(rect=(0.015, 0, 1, 0.97 if title else 1))
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def stack_grid(columns: Sequence[tuple[str, np.ndarray, Sequence[float]]],
               originals: np.ndarray, path: str | os.PathLike, *, title: str = "",
               max_victims: int = 4) -> None:
    """One example reconstruction per defense stack, like the core paper's Figure 2.

    Args:
      columns: (label, reconstructions (N, H, W, C), per-image SSIM) per stack.
      originals: the victims (N, H, W, C), the same for every stack.
      path: output PNG.
      title: figure title.
      max_victims: rows (the first victims).
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    n = min(max_victims, len(originals))
    ncols = len(columns) + 1
    fig, axes = plt.subplots(n, ncols, figsize=(1.05 * ncols + 0.3, 1.25 * n + 0.7),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r in range(n):
        img, cmap = _as_display(originals[r])
        axes[r, 0].imshow(img, cmap=cmap, vmin=0, vmax=1)
        for c, (_, recon, ssims) in enumerate(columns, start=1):
            img, cmap = _as_display(recon[r])
            axes[r, c].imshow(img, cmap=cmap, vmin=0, vmax=1)
            axes[r, c].set_xlabel(f"{ssims[r]:.2f}", fontsize=6, labelpad=1)
    axes[0, 0].set_title("original", fontsize=7)
    for c, (label, _, _) in enumerate(columns, start=1):
        axes[0, c].set_title(label, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def stack_label(defenses: Sequence[str]) -> str:
    """Short column label of a defense stack, as the paper's Figure 2 names them."""
    short = {"dropout": "DO", "dp": "DP", "prune": "GP", "precode": "P", "cvb": "C",
             "mixup": "MU", "instahide": "IH"}
    return "+".join(short.get(d, d) for d in defenses) or "none"
