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
