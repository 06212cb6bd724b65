"""R-GAP: the recursive closed-form gradient attack, with its rank analysis.

Zhu and Blaschko, "R-GAP: Recursive Gradient Attack on Privacy", ICLR 2021, on the
bias-free LeakyReLU networks of :mod:`jgi.models.cnn6` with one logit ``mu`` and the
logistic loss ``l = log(1 + exp(-s mu))`` (label ``s`` in {-1, +1}).

The attack goes from the output to the input, one layer at a time:

1. Linear layer (no bias): its gradient is ``g = dl/dmu * a`` with ``a`` its input, so
   ``<w, g> = dl/dmu * mu = -u / (1 + e^u)`` with ``u = s mu``. This scalar equation
   has one root with ``u < u* = 1.2785`` (where ``-u / (1 + e^u)`` has its minimum);
   the attack takes that branch (:func:`solve_margin`), i.e. it assumes the client's
   example is not confidently classified, as the authors' demonstration ensures by
   flipping the label of the untrained network's prediction. Then
   ``dl/dmu = -s / (1 + e^u)`` and ``a = g / (dl/dmu)``.
2. Convolution ``i`` (no bias), output ``x_{i+1}`` known from the step before and the
   gradient ``k = dl/dz_i`` of its pre-activation from the chain rule (the layer
   above's weights times its ``k``, times the LeakyReLU's derivative, which the sign
   of ``x_{i+1}`` gives): its input ``x_i`` solves the linear system
   - forward constraints: ``W_i x_i = z_i = LeakyReLU^{-1}(x_{i+1})``;
   - gradient constraints: ``dL/dW_i = P(x_i)^T K`` (``P`` the patches, ``K`` the
     positions x channels matrix of ``k``),
   solved by least squares over the unpadded input (padding is no unknown, so R-GAP's
   padding constraints are built in).

Rank analysis (the paper's section 4): the forward constraints give at most
``out_positions * out_channels`` independent equations; the gradient constraints give
``patch_size * r`` equations with ``r = rank K <= min(out_positions, out_channels)``,
of which ``out_channels * r`` repeat the forward ones (``W^T dL/dW = Z^T K``), so at most
``(patch_size - out_channels) * r`` are new (:func:`rank_analysis`, exact counts); the
attack's own least-squares solve reports the numerical rank of every layer's system
(:attr:`Result.ranks`). A layer whose rank is below its number of unknowns cannot be
inverted: CNN6-d's conv1 at 32x32 has 3,468 unknowns and at most 3,380 independent
equations, so R-GAP returns only the minimum-norm part of its input and the error
passes on to every earlier layer. At batch B > 1 (:func:`rank_analysis` with
``batch``) the linear layer's gradient mixes the B feature maps, so the recursion cannot
start; given the features (:func:`recover_from_features`, an oracle) the convolutions'
systems stack B examples' forward constraints on one shared set of gradient
constraints and stay determined up to a batch size the counts give (B = 4 for CNN6 at
32x32). Deviations: the paper's "virtual constraints" and its
use of several gradient steps are left out; the solve is float32.

Threat model (:data:`THREAT_MODEL`): an honest-but-curious server that knows the
architecture, the weights and the label, and sees one example's gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgi.attacks.analytic import ThreatModel
from jgi.models import cnn6 as cnn6_lib
from jgi.models.interface import Model, Params

THREAT_MODEL = ThreatModel(
    knows="the architecture (bias-free, invertible activations, one logit), the weights, "
          "the label",
    changes="nothing (honest-but-curious)",
    sees="one example's gradient under the logistic loss")

U_STAR = 1.2784645  # argmin of -u / (1 + e^u): the branch boundary of solve_margin


def logistic_loss(logits: jax.Array, signs: jax.Array) -> jax.Array:
    """Mean ``log(1 + exp(-s mu))`` over the batch; ``logits`` (B, 1), ``signs`` (B,) +-1."""
    return jnp.mean(jax.nn.softplus(-signs * logits[:, 0]))


def client_gradient(model: Model, params: Params, x: jax.Array, signs: jax.Array) -> Params:
    """The client's gradient under R-GAP's logistic loss (jgi.fl's clients use softmax
    cross-entropy, which has zero gradient for one logit)."""
    return jax.grad(lambda p: logistic_loss(model.apply(p, x, {}), signs))(params)


def flipped_signs(model: Model, params: Params, x: jax.Array) -> jax.Array:
    """Labels opposite to the network's prediction (the authors' demonstration), so
    that ``u = s mu < 0`` is on :func:`solve_margin`'s branch."""
    return jnp.where(model.apply(params, x, {})[:, 0] > 0, -1.0, 1.0)


def solve_margin(v: jax.Array, iters: int = 80) -> jax.Array:
    """The root ``u < u*`` of ``-u / (1 + e^u) = v`` by bisection (monotone branch)."""
    v = jnp.maximum(v, -0.2784645)  # the branch's minimum value, f(u*)

    def f(u):
        return -u * jax.nn.sigmoid(-u)

    def body(_, lo_hi):
        lo, hi = lo_hi
        mid = 0.5 * (lo + hi)
        above = f(mid) > v  # f decreases on the branch: the root is to the right
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.asarray(-60.0, v.dtype),
                                                jnp.asarray(U_STAR, v.dtype)))
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class LayerRank:
    """Equations and unknowns of one layer's system (exact counts).

    Attributes:
      layer: the layer's name.
      unknowns: entries of its (unpadded) input.
      forward: forward constraints (output entries).
      gradient: gradient constraints after reducing ``K`` to its rank bound r
        (``patch_size * r``).
      new_gradient: gradient constraints that are not implied by the forward ones,
        at most ``(patch_size - out_channels) * r``.
      bound: ``min(unknowns, forward + new_gradient)``, the rank's upper bound.
    """

    layer: str
    unknowns: int
    forward: int
    gradient: int
    new_gradient: int
    bound: int

    @property
    def deficient(self) -> bool:
        return self.bound < self.unknowns


def _convs(model: Model):
    convs = cnn6_lib.CONVS.get(model.name)
    if convs is None:
        raise ValueError(f"R-GAP is implemented for {', '.join(cnn6_lib.CONVS)} (bias-free "
                         f"LeakyReLU convolutions and one logit); got {model.name!r}.")
    return convs


def rank_analysis(model: Model, input_shape: tuple[int, int, int],
                  batch: int = 1) -> list[LayerRank]:
    """R-GAP's per-layer counts for ``model`` at ``input_shape``, input layer first.

    ``batch`` B > 1 counts the system of a batch's summed gradient *given every
    example's output of the layer* (what the layer above would hand down if it had
    been solved): the unknowns and the forward constraints grow B-fold, the gradient
    constraints stay one set, now with ``r = min(B * out_positions, out_channels)``.
    The linear layer is the exception: its gradient ``sum_b dl/dmu_b a_b`` is
    ``n`` equations for ``B * n`` unknowns and no forward constraint (the logits are
    not observed), so from B = 2 on the recursion cannot even start
    (:func:`recover_from_features` starts it from the examples' features instead).
    """
    if batch < 1:
        raise ValueError(f"rank_analysis: batch must be >= 1, got {batch}.")
    convs = _convs(model)
    shapes = cnn6_lib.feature_shapes(tuple(input_shape), convs)
    rows = []
    for i, spec in enumerate(convs):
        h, w, c = shapes[i]
        oh, ow, oc = shapes[i + 1]
        positions = oh * ow
        r = min(batch * positions, oc)
        patch = spec.kernel * spec.kernel * c
        forward = batch * positions * oc
        new = max(patch - oc, 0) * r
        rows.append(LayerRank(f"conv{i}", batch * h * w * c, forward, patch * r, new,
                              min(batch * h * w * c, forward + new)))
    n = math.prod(shapes[-1])
    rows.append(LayerRank("fc", batch * n, 0, n, n, n))
    return rows


class Result(NamedTuple):
    """What R-GAP returns for one victim.

    Attributes:
      image: (H, W, C) the reconstructed input.
      ranks: (layers,) numerical rank of each conv layer's system, input layer first.
      unknowns: (layers,) the unknowns of each (same for every victim).
      margin: the recovered ``u = s mu``.
    """

    image: jax.Array
    ranks: jax.Array
    unknowns: jax.Array
    margin: jax.Array


def _leaky_inverse(x, slope):
    return jnp.where(x > 0, x, x / slope)


def patch_index(in_shape: tuple[int, int, int], spec: cnn6_lib.ConvSpec) -> np.ndarray:
    """(positions, k*k*C) index of every patch entry into the unpadded flattened input,
    ``n = H*W*C`` for a padding entry; patch entries ordered (kh, kw, C) as
    ``w.reshape(k*k*C, out)``."""
    h, w, c = in_shape
    p, k, st = spec.padding, spec.kernel, spec.stride
    oh = (h + 2 * p - k) // st + 1
    ow = (w + 2 * p - k) // st + 1
    rows = (np.arange(oh)[:, None, None, None, None] * st
            + np.arange(k)[None, None, :, None, None] - p)
    cols = (np.arange(ow)[None, :, None, None, None] * st
            + np.arange(k)[None, None, None, :, None] - p)
    ch = np.arange(c)[None, None, None, None, :]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows * w + cols) * c + ch
    idx = np.where(inside, flat, h * w * c)
    return np.broadcast_to(idx, (oh, ow, k, k, c)).reshape(oh * ow, k * k * c)


RANK_RTOL = 1e-3  # singular values below this fraction of the largest count as zero


def _least_squares(a: jax.Array, b: jax.Array, refinements: int = 2, with_rank: bool = True):
    """Least squares through the normal equations with iterative refinement, and the
    numerical rank (singular values above ``RANK_RTOL`` of the largest).

    XLA's SVD and QR on CPU take ~100 ms for a 1,440 x 144 system where the Cholesky
    factorisation of ``a^T a`` takes ~1 ms; with unit-norm rows and two refinement
    steps the solution is as accurate as ``jnp.linalg.lstsq``'s here (input MSE ~1e-12
    at 8x8 on CNN6). The rank comes from the eigenvalues of ``a^T a`` (float32 resolves
    singular values down to ~3e-4 of the largest, hence the tolerance).
    """
    gram = a.T @ a
    if with_rank:
        evals = jnp.linalg.eigvalsh(gram)
        rank = jnp.sum(evals > (RANK_RTOL ** 2) * evals[-1])
        top = evals[-1]
    else:  # the largest eigenvalue is at most the trace; -1 marks "not computed"
        rank, top = jnp.asarray(-1), jnp.trace(gram)
    ridge = jnp.finfo(a.dtype).eps * top
    factor = jax.scipy.linalg.cho_factor(gram + ridge * jnp.eye(gram.shape[0], dtype=a.dtype))
    x = jax.scipy.linalg.cho_solve(factor, a.T @ b)
    for _ in range(refinements):
        x = x + jax.scipy.linalg.cho_solve(factor, a.T @ (b - a @ x))
    return x, rank


@functools.partial(jax.jit, static_argnames=("spec", "in_shape", "slope", "with_rank"))
def _solve_conv(w, dw, spec, x_next, dldx_next, in_shape, slope, with_rank=True):
    """One conv layer: its inputs from its outputs, their k and the weight gradient.

    ``x_next`` and ``dldx_next`` are (B, oh, ow, out) for the B examples whose
    gradients sum to ``dw`` (B = 1: R-GAP's setting). The system's matrices are built
    by scattering the weights (forward constraints, one block per example) and the
    stacked ``K`` reduced to its row space (gradient constraints, shared by the
    examples) into the unpadded inputs' columns; every row is scaled to unit norm
    before the least-squares solve (without it float32 loses the input at the 1e-3
    level, with it 1e-12).
    """
    batch = x_next.shape[0]
    z = _leaky_inverse(x_next, slope)
    k = dldx_next * jnp.where(x_next > 0, 1.0, slope)
    patch, cout = math.prod(w.shape[:3]), w.shape[-1]
    idx = patch_index(in_shape, spec)
    positions, n = idx.shape[0], math.prod(in_shape)
    km = k.reshape(batch, positions, cout)
    # (r, cout), r = min(B * positions, cout): the row space of the stacked K
    _, _, vt = jnp.linalg.svd(km.reshape(batch * positions, cout), full_matrices=False)
    kv = km @ vt.T  # (B, positions, r)
    r = kv.shape[-1]
    a_fwd = jnp.zeros((positions, n + 1, cout), w.dtype).at[
        np.arange(positions)[:, None], idx].add(
        jnp.broadcast_to(w.reshape(patch, cout)[None], (positions, patch, cout)))
    a_fwd = a_fwd[:, :n].transpose(0, 2, 1).reshape(positions * cout, n)
    a_grad = jax.vmap(lambda kb: jnp.zeros((patch, n + 1, r), w.dtype).at[
        np.arange(patch)[None, :], idx].add(
        jnp.broadcast_to(kb[:, None, :], (positions, patch, r))))(kv)
    a_grad = a_grad[:, :, :n].transpose(1, 3, 0, 2).reshape(patch * r, batch * n)
    a = jnp.concatenate([jnp.kron(jnp.eye(batch, dtype=w.dtype), a_fwd), a_grad])
    b = jnp.concatenate([z.ravel(), (dw.reshape(patch, cout) @ vt.T).ravel()])
    norms = jnp.linalg.norm(a, axis=1)
    scale = jnp.where(norms > 0, 1.0 / jnp.where(norms > 0, norms, 1.0), 0.0)
    x, rank = _least_squares(a * scale[:, None], b * scale, with_rank=with_rank)
    dldx = jnp.einsum("qn,bq->bn", a_fwd, km.reshape(batch, positions * cout))
    return x.reshape(batch, *in_shape), dldx.reshape(batch, *in_shape), rank


def recover(model: Model, params: Params, update: Params, sign: jax.Array,
            input_shape: tuple[int, int, int], with_ranks: bool = True) -> Result:
    """R-GAP on one example's gradient.

    Args:
      model: :func:`jgi.models.cnn6.cnn6` or ``cnn6d`` (one logit).
      params: the weights the gradient was computed at.
      update: the gradient (:func:`client_gradient` of one example).
      sign: the label, +1 or -1.
      input_shape: (H, W, C).
      with_ranks: compute each layer's numerical rank (an eigendecomposition per
        layer; without it the ranks are -1 and the solve is the same).

    Returns:
      A :class:`Result`.
    """
    convs = _convs(model)
    slope = dict(model.options).get("slope", cnn6_lib.SLOPE)
    shapes = cnn6_lib.feature_shapes(tuple(input_shape), convs)
    w_fc, g_fc = params["fc"]["w"], update["fc"]["w"]
    if w_fc.shape[1] != 1:
        raise ValueError(f"R-GAP needs one logit; {model.name} has {w_fc.shape[1]}.")
    u = solve_margin(jnp.vdot(w_fc[:, 0], g_fc[:, 0]))
    dl_dmu = -sign * jax.nn.sigmoid(-u)
    x = (g_fc[:, 0] / dl_dmu).reshape(shapes[-1])
    dldx = (dl_dmu * w_fc[:, 0]).reshape(shapes[-1])
    ranks = []
    for i in reversed(range(len(convs))):
        name = f"conv{i}"
        x, dldx, rank = _solve_conv(params[name]["w"], update[name]["w"], convs[i], x[None],
                                    dldx[None], shapes[i], slope, with_ranks)
        x, dldx = x[0], dldx[0]
        ranks.append(rank)
    unknowns = jnp.asarray([math.prod(s) for s in shapes[:-1]], jnp.int32)
    return Result(x, jnp.stack(ranks[::-1]).astype(jnp.int32), unknowns, u)


@functools.partial(jax.jit, static_argnums=(0, 4))
def recover_victims(model: Model, params: Params, updates: Params, signs: jax.Array,
                    input_shape: tuple[int, int, int]) -> Result:
    """:func:`recover` vmapped over victims (leading axis of ``updates`` and ``signs``)."""
    return jax.vmap(lambda u, s: recover(model, params, u, s, input_shape))(updates, signs)


def recover_from_features(model: Model, params: Params, update: Params, signs: jax.Array,
                          features: jax.Array, input_shape: tuple[int, int, int],
                          with_ranks: bool = True) -> Result:
    """R-GAP's recursion on a batch's gradient, started from the examples' features.

    At batch B > 1 the linear layer's gradient mixes the B feature maps
    (:func:`rank_analysis`), so this function is handed them (``features``: the
    linear layer's inputs, an oracle no honest-but-curious server has) and shows how
    far the convolutions' systems, one per layer with the B examples' forward
    constraints and the shared gradient constraints, would carry the recursion: the
    inputs come back when every layer's rank equals its ``batch * unknowns``. With
    ``B = 1`` this is :func:`recover` with the margin read off the features.

    Args:
      model: cnn6 or cnn6d.
      params: the weights.
      update: the gradient of the batch's mean logistic loss (:func:`client_gradient`).
      signs: (B,) the labels.
      features: (B, n) the linear layer's inputs.
      input_shape: (H, W, C).
      with_ranks: compute the numerical ranks (of B * unknowns each).

    Returns:
      A :class:`Result` with ``image`` (B, H, W, C), ``margin`` (B,) and ``unknowns``
      per example.
    """
    convs = _convs(model)
    slope = dict(model.options).get("slope", cnn6_lib.SLOPE)
    shapes = cnn6_lib.feature_shapes(tuple(input_shape), convs)
    batch = features.shape[0]
    w_fc = params["fc"]["w"][:, 0]
    u = signs * (features @ w_fc)
    dl_dmu = -signs * jax.nn.sigmoid(-u) / batch  # the loss is the batch mean
    x = features.reshape(batch, *shapes[-1])
    dldx = (dl_dmu[:, None] * w_fc[None]).reshape(batch, *shapes[-1])
    ranks = []
    for i in reversed(range(len(convs))):
        name = f"conv{i}"
        x, dldx, rank = _solve_conv(params[name]["w"], update[name]["w"], convs[i], x, dldx,
                                    shapes[i], slope, with_ranks)
        ranks.append(rank)
    unknowns = jnp.asarray([math.prod(s) for s in shapes[:-1]], jnp.int32)
    return Result(x, jnp.stack(ranks[::-1]).astype(jnp.int32), unknowns, u)


def features(model: Model, params: Params, x: jax.Array) -> jax.Array:
    """The linear layer's inputs (B, n) of a batch (the oracle of
    :func:`recover_from_features`)."""
    for n, spec in zip((f"conv{i}" for i in range(len(_convs(model)))), _convs(model),
                       strict=True):
        x = cnn6_lib.leaky_relu(cnn6_lib.conv_apply(params[n]["w"], x, spec),
                                dict(model.options).get("slope", cnn6_lib.SLOPE))
    return x.reshape(x.shape[0], -1)
