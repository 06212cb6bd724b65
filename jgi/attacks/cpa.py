"""Cocktail Party Attack (CPA): unmixing a dense layer's aggregated weight gradient.

Kariyappa, Guo, Maeng, Xiong, Suh, Qureshi, Lee, "Cocktail Party Attack: Breaking
Aggregation-Based Privacy in Federated Learning using Independent Component Analysis",
ICML 2023; NotEasy Eq. 21-23 and its Table II settings. For the first dense layer
``h = x W + b`` of a batch of B images, the weight gradient's row of unit ``j`` is
``sum_n c_nj x_n`` (``c_nj = dL/dh_nj / B``): the m units' rows are m linear mixtures
of the B images. Recovering the images is blind source separation, solved as in ICA:

1. centre every row over the pixels, whiten with the eigenvectors of the rows'
   covariance (``jnp.linalg.eigh``) and keep the top-B components:
   ``Z = D^{-1/2} E^T G`` (B x pixels, unit covariance);
2. find an unmixing matrix ``U`` (B x B, identity init; CPA keeps its rows at unit
   norm, jgi by default keeps it orthogonal: ``CPAConfig.orthogonalize``) with Adam
   (lr 1e-3) minimising ``-mean_i J(u_i Z) + tv * mean_i TV(u_i Z)
   + decor * mean_{i != j} (exp(T |cos(u_i, u_j)|) - 1)``,
   where ``J(y) = (E log cosh y - E log cosh nu)^2`` (``nu ~ N(0, 1)``) is the
   negentropy approximation of non-Gaussianity; defaults from NotEasy's CPA setting
   (decor 1.47, T 12.4, TV 3.1, lr 1e-3; 25,000 iterations there, fewer here);
3. the rows of ``U Z`` are the images up to sign, scale and order (ICA's ambiguities).

Evaluation (:func:`align`) matches every original to the source with the largest
absolute correlation (greedy, one source each), flips the sign to make it positive and
min-max scales the source to [0, 1]: the sign and the pairing use the ground truth, as
any metric on ICA output must. The hidden width must be at least the batch size.
Feature inversion for CNNs (CPA-FI, a pretrained VGG) is left out: jgi has no
pretrained feature extractor and none can be trained in a CPU budget worth spending.

Threat model (:data:`THREAT_MODEL`): an honest-but-curious server that sees a batch's
aggregated gradient of a model whose first layer is dense (e.g. :func:`jgi.models.mlp`),
and knows the batch size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi.attacks import runner
from jgi.attacks.analytic import ThreatModel

THREAT_MODEL = ThreatModel(
    knows="the architecture (first layer dense) and the batch size B",
    changes="nothing (honest-but-curious)",
    sees="the first dense layer's weight gradient aggregated over the batch (or a sum of "
         "clients' gradients)")

LOGCOSH_GAUSS = 0.37456720  # E[log cosh nu] for nu ~ N(0, 1)


@dataclasses.dataclass(frozen=True)
class CPAConfig:
    """Hyperparameters of CPA (defaults: NotEasy's CPA row).

    At lr 1e-3 the unmixing matrix moves slowly: on 4 MNIST images through the MLP the
    correlation with the originals barely moves in 500 steps; jgi's CPU-scale runs use
    lr 1e-2 and 1,000-2,000 steps instead (docs/results/analytic.md).

    Attributes:
      iters: optimisation steps (NotEasy: 25,000).
      lr: Adam learning rate (1e-3).
      decor_weight: weight of the decorrelation penalty (1.47).
      temperature: T in exp(T |cos|) (12.4).
      tv_weight: weight of the total variation of the sources (3.1).
      orthogonalize: after every step, replace U by its nearest orthogonal matrix
        (symmetric decorrelation ``(U U^T)^{-1/2} U``, as FastICA does) instead of only
        normalising its rows (CPA). The decorrelation penalty is then zero throughout;
        jgi's default, because with CPA's projection the first Adam steps raise the
        penalty above the identity's loss and, at CPU-scale step counts, the best
        iterate often stays the identity (docs/results/analytic.md).
      chunk_size: steps per compiled chunk of the runner.
    """

    iters: int = 25_000
    lr: float = 1e-3
    decor_weight: float = 1.47
    temperature: float = 12.4
    tv_weight: float = 3.1
    orthogonalize: bool = True
    chunk_size: int = 100

    def __post_init__(self):
        if self.iters < 1:
            raise ValueError(f"CPAConfig.iters must be >= 1, got {self.iters}.")
        if self.lr <= 0:
            raise ValueError(f"CPAConfig.lr must be > 0, got {self.lr}.")
        for name in ("decor_weight", "temperature", "tv_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"CPAConfig.{name} must be >= 0, got {getattr(self, name)}.")


def mixtures(update: Any, layer: str = "hidden") -> jax.Array:
    """The (units, pixels) matrix of the dense layer's weight gradient rows."""
    w = update[layer]["w"]
    if w.ndim != 2:
        raise ValueError(f"CPA unmixes a dense layer's weight gradient (in, units); "
                         f"{layer!r} has shape {tuple(w.shape)}.")
    return w.T


def whiten(g: jax.Array, num_sources: int) -> jax.Array:
    """Centre the rows of ``g`` (m, d) over d, project onto the top ``num_sources``
    principal directions and scale them to unit variance: (num_sources, d)."""
    if num_sources > g.shape[0]:
        raise ValueError(f"CPA needs at least as many units as images: {g.shape[0]} units, "
                         f"batch {num_sources}.")
    gc = g - g.mean(axis=1, keepdims=True)
    cov = gc @ gc.T / gc.shape[1]
    evals, evecs = jnp.linalg.eigh(cov)  # ascending
    top_vals, top_vecs = evals[-num_sources:], evecs[:, -num_sources:]
    scale = jax.lax.rsqrt(jnp.maximum(top_vals, jnp.finfo(g.dtype).tiny))
    return (top_vecs * scale).T @ gc


def _negentropy(y: jax.Array) -> jax.Array:
    return (jnp.mean(jnp.log(jnp.cosh(y)), axis=-1) - LOGCOSH_GAUSS) ** 2


def _tv(images: jax.Array) -> jax.Array:
    dx = jnp.abs(images[:, :, 1:] - images[:, :, :-1]).mean(axis=(1, 2, 3))
    dy = jnp.abs(images[:, 1:] - images[:, :-1]).mean(axis=(1, 2, 3))
    return dx + dy


def _normalise_rows(u: jax.Array) -> jax.Array:
    return u / jnp.linalg.norm(u, axis=1, keepdims=True)


def _nearest_orthogonal(u: jax.Array) -> jax.Array:
    evals, evecs = jnp.linalg.eigh(u @ u.T)
    inv_sqrt = (evecs * jax.lax.rsqrt(jnp.maximum(evals, 1e-12))) @ evecs.T
    return inv_sqrt @ u


def problem(config: CPAConfig, input_shape: tuple[int, ...]) -> runner.Problem:
    """CPA as a runner :class:`~jgi.attacks.runner.Problem`.

    Victim data: ``{"z": whitened mixtures (B, pixels)}``; no context.
    """
    input_shape = tuple(input_shape)

    def init(key, victim, context):
        del key, context
        return {"u": jnp.eye(victim["z"].shape[0], dtype=victim["z"].dtype)}

    def objective(candidate, victim, context, key):
        del context, key
        u = _normalise_rows(candidate["u"])
        y = u @ victim["z"]
        ng = jnp.mean(_negentropy(y))
        cos = u @ u.T
        off = 1.0 - jnp.eye(u.shape[0], dtype=u.dtype)
        decor = jnp.sum(off * (jnp.exp(config.temperature * jnp.abs(cos)) - 1.0)) / jnp.maximum(
            off.sum(), 1.0)
        tv = jnp.mean(_tv(y.reshape(u.shape[0], *input_shape)))
        loss = -ng + config.decor_weight * decor + config.tv_weight * tv
        return loss, {"negentropy": ng, "decor": decor, "tv": tv}

    def project(candidate, victim, context):
        del victim, context
        if config.orthogonalize:
            return {"u": _nearest_orthogonal(candidate["u"])}
        return {"u": _normalise_rows(candidate["u"])}

    return runner.Problem(init=init, objective=objective, optimizer=optax.adam(config.lr),
                          project=project)


def attack(updates: Any, batch_size: int, input_shape: tuple[int, ...],
           config: CPAConfig = CPAConfig(), key: jax.Array | None = None, *,
           layer: str = "hidden", progress: bool | str = False) -> tuple[jax.Array, Any]:
    """CPA on many victims' aggregated gradients at once.

    Args:
      updates: the gradients, a leading victim axis on every leaf.
      batch_size: B, the sources to separate.
      input_shape: (H, W, C).
      config: :class:`CPAConfig`.
      key: PRNG key of the runner (the attack itself is deterministic).
      layer: the dense layer's key in the update.
      progress: the runner's progress bar.

    Returns:
      ``(sources, result)``: (V, B, H, W, C) the separated sources (arbitrary sign,
      scale and order) and the runner's :class:`~jgi.attacks.runner.AttackResult`.
    """
    g = jax.vmap(lambda u: mixtures(u, layer))(updates)
    z = jax.jit(jax.vmap(lambda m: whiten(m, batch_size)))(g)
    stopping = runner.StoppingRule(max_iters=config.iters, loss_below=-jnp.inf,
                                   patience=config.iters)
    result = runner.run(problem(config, input_shape), {"z": z}, {},
                        jax.random.key(0) if key is None else key, stopping,
                        chunk_size=min(config.chunk_size, config.iters), progress=progress)
    # The runner keeps the lowest-loss iterate.
    u = jax.vmap(_normalise_rows)(jnp.asarray(result.best["u"]))
    sources = jnp.einsum("vij,vjd->vid", u, z)
    return sources.reshape(sources.shape[0], batch_size, *input_shape), result


def align(originals: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs each original with a source and puts the source on the image scale.

    Args:
      originals: (N, H, W, C) images in [0, 1].
      sources: (B, H, W, C) CPA's sources (B = N, or fewer when the client held more
        images than the attack separated).

    Returns:
      ``(images, correlations)``: (N, H, W, C) the matched sources, sign fixed and
      min-max scaled to [0, 1], and each pair's absolute correlation; an original left
      without a source gets zeros and correlation 0.
    """
    o = np.asarray(originals, np.float64).reshape(len(originals), -1)
    s = np.asarray(sources, np.float64).reshape(len(sources), -1)
    oc = (o - o.mean(1, keepdims=True)) / (o.std(1, keepdims=True) + 1e-12)
    sc = (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-12)
    corr = oc @ sc.T / o.shape[1]
    pairs = {}
    free_o, free_s = set(range(len(o))), set(range(len(s)))
    for flat in np.argsort(-np.abs(corr), axis=None):
        i, j = divmod(int(flat), corr.shape[1])
        if i in free_o and j in free_s:
            pairs[i] = j
            free_o.discard(i)
            free_s.discard(j)
    images = np.zeros_like(o)
    corrs = np.zeros(len(o))
    for i, j in pairs.items():
        v = s[j] * np.sign(corr[i, j])
        images[i] = (v - v.min()) / max(v.max() - v.min(), 1e-12)
        corrs[i] = abs(corr[i, j])
    return images.reshape(originals.shape).astype(np.float32), corrs
