"""How much of a client's update is random, layer by layer.

A stochastic defense protects an image only as far as the shared update changes with
the client's randomness (dropout masks, bottleneck eps, DP noise) in the layers an
attack matches. :func:`update_noise` draws several randomness samples for the same
images and reports, per parameter leaf,

- ``share``: the leaf's share of the update's squared norm (mean over draws and
  images). The cosine gradient distance is dominated by the leaves with most of the
  norm;
- ``cosine``: the mean cosine similarity between the leaf's updates under two
  different draws (1 = the randomness does not matter, about 0 = a fresh direction per
  draw);

and the same cosine for the whole update and for the leaves PIG keeps (models with a
bottleneck). It explained, for example, why PIG breaks a PRECODE placed before the
classifier: the kept layers' cosine between draws is 0.80 there, 0.26 after
convolutional block 0 (``python -m experiments.gradient_noise``).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jgi.defenses.stack import NO_DEFENSE, DefenseStack
from jgi.fl import client
from jgi.models.interface import Model, Params


@dataclasses.dataclass(frozen=True)
class UpdateNoise:
    """Result of :func:`update_noise`.

    Attributes:
      paths: the parameter leaves, as ``jax.tree_util.keystr`` paths.
      share: (leaves,) mean share of the squared update norm.
      cosine: (leaves,) mean cosine between two draws of the client's randomness.
      cosine_all: the same for the whole update.
      cosine_pig: the same over the leaves PIG keeps, or None without a bottleneck.
      pig_kept: (leaves,) bool, the leaves PIG keeps (all True without a bottleneck).
      update_norms: (draws, images) the norm of each update.
    """

    paths: tuple[str, ...]
    share: np.ndarray
    cosine: np.ndarray
    cosine_all: float
    cosine_pig: float | None
    pig_kept: np.ndarray
    update_norms: np.ndarray

    def markdown(self) -> str:
        lines = ["| parameter | share of squared norm | cosine between draws | PIG keeps |",
                 "|---|---:|---:|---|"]
        for path, s, c, k in zip(self.paths, self.share, self.cosine, self.pig_kept,
                                 strict=True):
            lines.append(f"| `{path}` | {s:.4f} | {c:.3f} | {'yes' if k else ''} |")
        lines.append(f"| whole update | 1 | {self.cosine_all:.3f} | |")
        if self.cosine_pig is not None:
            lines.append(f"| PIG's kept leaves | {float(self.share[self.pig_kept].sum()):.4f} "
                         f"| {self.cosine_pig:.3f} | |")
        return "\n".join(lines)


def update_noise(model: Model, params: Params, x: jax.Array, y: jax.Array, key: jax.Array,
                 stack: DefenseStack = NO_DEFENSE, draws: int = 4) -> UpdateNoise:
    """Per-leaf norm shares and between-draw cosines of batch-size-1 client updates.

    Args:
      model: the model (model-level defenses built in).
      params: its parameters.
      x: images (V, H, W, C), normalised; each is one client update of batch size 1.
      y: labels (V,).
      key: for the ``draws`` independent randomness samples per image.
      stack: the gradient-level defenses (DP, pruning) the client applies.
      draws: randomness samples per image, at least 2.

    Returns:
      An :class:`UpdateNoise`.
    """
    if draws < 2:
        raise ValueError(f"update_noise: draws must be >= 2 to compare draws, got {draws}.")
    if x.ndim != 4 or y.shape != x.shape[:1]:
        raise ValueError(f"update_noise: expected x (V, H, W, C) and y (V,), got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}.")
    shape = tuple(x.shape[1:])

    @jax.jit
    def one_draw(k):
        randomness = client.sample_victim_randomness(k, model, params, stack, shape, x.shape[0])
        return client.victim_updates(model, params, x, y, randomness, stack)

    updates = [one_draw(k) for k in jax.random.split(key, draws)]  # compiled once
    flat = [[leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(u)]
            for u in updates]  # draws x leaves x (V, size)
    sq = np.array([[np.asarray(jnp.sum(leaf ** 2, axis=1)) for leaf in d] for d in flat])
    share = (sq / sq.sum(axis=1, keepdims=True)).mean(axis=(0, 2))  # (leaves,)
    pairs = list(itertools.combinations(range(draws), 2))
    # per pair, leaf and image: <u_i, u_j>; every cosine below is a masked sum of these
    dots = np.array([[np.asarray(jnp.sum(a * b, axis=1)) for a, b in
                      zip(flat[i], flat[j], strict=True)] for i, j in pairs])

    def mean_cos(mask):
        m = np.asarray(mask, bool)
        cos = [dots[p][m].sum(0) / np.maximum(np.sqrt(sq[i][m].sum(0) * sq[j][m].sum(0)),
                                              1e-30) for p, (i, j) in enumerate(pairs)]
        return float(np.mean(cos))

    n = len(flat[0])
    cosine = np.array([mean_cos(np.arange(n) == leaf) for leaf in range(n)])
    paths = tuple(jax.tree_util.keystr(p) for p, _ in
                  jax.tree_util.tree_flatten_with_path(params)[0])
    if model.bottleneck is not None:
        kept = np.array(model.leaves_before_bottleneck_decoder(params))
        cos_pig = mean_cos(kept)
    else:
        kept, cos_pig = np.ones(n, bool), None
    return UpdateNoise(paths=paths, share=share, cosine=cosine,
                       cosine_all=mean_cos(np.ones(n, bool)), cosine_pig=cos_pig, pig_kept=kept,
                       update_norms=np.sqrt(sq.sum(axis=1)))
