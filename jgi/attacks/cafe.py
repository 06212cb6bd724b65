"""CAFE: catastrophic data leakage in vertical federated learning, with its own harness.

Jin, Chen, Hsu, Yu, Chen, Wang, "CAFE: Catastrophic Data Leakage in Vertical Federated
Learning", NeurIPS 2021 (listed in the catalogue of
``../shared/papers/gradient-inversion-attacks-and-defenses-list.txt``; the authors'
code is TensorFlow, DeRafael/CAFE, not read for this module).

The harness (vertical FL, :class:`VFLConfig`):

- a data set of ``N`` images; every image is cut into ``parties`` horizontal strips and
  party ``m`` holds strip ``m`` of *every* image (vertical partition: same samples,
  different features);
- party ``m``'s bottom model is one dense layer with bias and ReLU, ``h_m = relu(x_m W_m
  + b_m)`` (the first fully connected layer with bias that CAFE's steps I-II read);
  the server's top model is a dense layer on the concatenated ``h_m`` with softmax
  cross-entropy on the labels, which the server holds;
- training: at iteration ``t`` the server picks a batch of ``batch`` indices ``s_t``
  (uniformly, without replacement inside the batch), the parties forward their strips
  of those samples, and every parameter takes one SGD step (``lr``) on the batch-mean
  loss.

Threat model (:data:`THREAT_MODEL`; :class:`CAFEConfig` is what the attacker does):

- the server *knows* the model, the parameters of every iteration, the labels and the
  batch indices ``s_t`` (it chose them: CAFE's data index alignment);
- it *changes* nothing (honest-but-curious);
- it *sees*, at every iteration, the batch-mean gradient of every parameter, parties'
  bottom models included (the aggregate the paper's server receives).

The attack keeps one dummy image per sample for the whole run, plus, per sample and
party, a dummy gradient of the loss with respect to the first dense layer's output
``U = x_m W_m + b_m`` (the paper's ``V``). At each observed iteration, it takes
``inner_steps`` Adam steps on the rows ``s_t`` of both, minimising

- step I: ``|| mean_{n in s_t} dU_n - db_m ||^2`` summed over parties (the bias gradient
  is the batch mean of ``dU``);
- step II: ``|| mean_{n in s_t} x_n^T dU_n - dW_m ||^2 / d_m`` (the weight gradient);
- step III as jgi does it: with a dense first layer the internal representation is the
  image strip itself, so step III reduces to the TV prior (``tv_weight``) on the
  dummy images and the box [0, 1];
- optionally (``grad_weight`` > 0, not in the paper) the distance between the whole
  model's gradient at the dummy batch and the observed one, which ties ``dU`` to the
  dummy images through the top model.

Where the paper is silent jgi chooses: Adam (lr ``lr``) with per-row state; rows not in
the batch are not changed (their Adam state neither); dummy images start at U(0, 1),
``dU`` at 0; the dummy ``dU`` carries over from iteration to iteration although the
model moves (the paper does the same: a small SGD step changes ``dU`` little).

Everything is vmapped over victims (independent federations, one data set each), and
the observed iterations run in a ``lax.scan``; :func:`run` returns snapshots of the
dummy data set every ``snapshot_every`` iterations.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jgi.attacks.analytic import ThreatModel


THREAT_MODEL = ThreatModel(
    knows="the vertical-FL model, its parameters at every iteration, the labels, and the "
          "indices of every batch (the server chose them)",
    changes="nothing (honest-but-curious)",
    sees="at every iteration the batch-mean gradient of every parameter, the parties' "
         "bottom models included")

@dataclasses.dataclass(frozen=True)
class VFLConfig:
    """The vertical-FL harness.

    Attributes:
      parties: number of parties; the image height must split evenly into them.
      hidden: units of each party's dense bottom layer.
      num_classes: classes of the server's top layer.
      batch: samples per training iteration.
      lr: SGD learning rate of the federation.
    """

    parties: int = 4
    hidden: int = 32
    num_classes: int = 10
    batch: int = 8
    lr: float = 0.01

    def __post_init__(self):
        for name in ("parties", "hidden", "num_classes", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"VFLConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.lr < 0:
            raise ValueError(f"VFLConfig.lr must be >= 0, got {self.lr}.")


@dataclasses.dataclass(frozen=True)
class CAFEConfig:
    """The attacker's settings (jgi's choices; the paper gives none for this harness).

    Attributes:
      lr: Adam learning rate on the dummy images.
      du_lr: Adam learning rate on the dummy ``dU`` (whose entries are ~100x smaller than
        pixels).
      inner_steps: attack steps per observed training iteration.
      tv_weight: total-variation prior on the dummy images.
      bias_weight: weight of step I.
      weight_weight: weight of step II.
      grad_weight: weight of the whole-model gradient distance (0: the paper's steps
        only).
      decay: per-row learning-rate decay, ``lr / sqrt(1 + decay * steps the row took)``
        (0: constant, the default).
    """

    lr: float = 0.05
    du_lr: float = 0.001
    inner_steps: int = 4
    tv_weight: float = 1e-3
    bias_weight: float = 1.0
    weight_weight: float = 1.0
    grad_weight: float = 0.0
    decay: float = 0.0

    def __post_init__(self):
        if self.lr <= 0 or self.du_lr <= 0 or self.inner_steps < 1:
            raise ValueError(f"CAFEConfig: lr and du_lr must be > 0 and inner_steps >= 1, "
                             f"got {self.lr}, {self.du_lr} and {self.inner_steps}.")
        for name in ("tv_weight", "bias_weight", "weight_weight", "grad_weight", "decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"CAFEConfig.{name} must be >= 0, got "
                                 f"{getattr(self, name)}.")


def split(images: jax.Array, parties: int) -> jax.Array:
    """(N, H, W, C) images -> (N, parties, H / parties * W * C) strips."""
    n, h = images.shape[0], images.shape[1]
    if h % parties:
        raise ValueError(f"CAFE: image height {h} does not split into {parties} parties; "
                         "choose a number of parties that divides it.")
    return images.reshape(n, parties, -1)


def merge(strips: jax.Array, image_shape: tuple[int, int, int]) -> jax.Array:
    """Inverse of :func:`split`."""
    return strips.reshape(strips.shape[0], *image_shape)


def init_params(key: jax.Array, vfl: VFLConfig, strip: int) -> dict:
    """PyTorch-default dense inits: bottom (parties, strip, hidden), top (P*h, classes)."""
    kb, kbb, kt, ktb = jax.random.split(key, 4)
    lim_b, lim_t = strip ** -0.5, (vfl.parties * vfl.hidden) ** -0.5
    u = jax.random.uniform
    return {"bottom": {"w": u(kb, (vfl.parties, strip, vfl.hidden), minval=-lim_b,
                              maxval=lim_b),
                       "b": u(kbb, (vfl.parties, vfl.hidden), minval=-lim_b, maxval=lim_b)},
            "top": {"w": u(kt, (vfl.parties * vfl.hidden, vfl.num_classes), minval=-lim_t,
                           maxval=lim_t),
                    "b": u(ktb, (vfl.num_classes,), minval=-lim_t, maxval=lim_t)}}


def loss_fn(params: dict, strips: jax.Array, labels: jax.Array) -> jax.Array:
    """Batch-mean cross-entropy of the VFL model on (B, parties, strip) inputs."""
    u = jnp.einsum("bps,psh->bph", strips, params["bottom"]["w"]) + params["bottom"]["b"]
    h = jax.nn.relu(u).reshape(strips.shape[0], -1)
    logits = h @ params["top"]["w"] + params["top"]["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))


class Observation(NamedTuple):
    """What the server sees at one iteration: the indices, the parameters, the gradient."""

    indices: jax.Array
    params: dict
    grad: dict


def observe(params: dict, strips: jax.Array, labels: jax.Array, key: jax.Array,
            vfl: VFLConfig) -> tuple[dict, Observation]:
    """One federation iteration: the server's batch choice, the gradient, the SGD step."""
    idx = jax.random.choice(key, strips.shape[0], (vfl.batch,), replace=False)
    grad = jax.grad(loss_fn)(params, strips[idx], labels[idx])
    new = jax.tree.map(lambda p, g: p - vfl.lr * g, params, grad)
    return new, Observation(idx, params, grad)


class AttackState(NamedTuple):
    x: jax.Array  # (N, parties, strip) dummy data set
    du: jax.Array  # (N, parties, hidden) dummy first-layer output gradients
    moments: tuple  # Adam's (first, second) moments of (x, du), each with rows N
    count: jax.Array  # (N,) Adam steps each row has taken


def _tv_rows(x: jax.Array, image_shape) -> jax.Array:
    img = x.reshape(x.shape[0], *image_shape)
    return (jnp.mean(jnp.abs(img[:, 1:] - img[:, :-1]))
            + jnp.mean(jnp.abs(img[:, :, 1:] - img[:, :, :-1])))


def attack_loss(x_b, du_b, obs: Observation, labels_b, config: CAFEConfig, image_shape):
    """CAFE's steps I-II (+ TV, + optional whole-gradient term) on the batch rows."""
    db = obs.grad["bottom"]["b"]  # (P, h)
    dw = obs.grad["bottom"]["w"]  # (P, s, h)
    step1 = jnp.sum(jnp.square(jnp.mean(du_b, axis=0) - db))
    step2 = jnp.sum(jnp.square(jnp.einsum("bps,bph->psh", x_b, du_b) / x_b.shape[0] - dw))
    loss = (config.bias_weight * step1 + config.weight_weight * step2 / dw.shape[1]
            + config.tv_weight * _tv_rows(x_b, image_shape))
    if config.grad_weight > 0:
        g = jax.grad(loss_fn)(obs.params, x_b, labels_b)
        loss = loss + config.grad_weight * sum(
            jnp.sum(jnp.square(a - b)) for a, b in zip(jax.tree.leaves(g),
                                                        jax.tree.leaves(obs.grad),
                                                        strict=True))
    return loss, (step1, step2)


def init_attack(key: jax.Array, n: int, strip: int, vfl: VFLConfig) -> AttackState:
    x = jax.random.uniform(key, (n, vfl.parties, strip))
    du = jnp.zeros((n, vfl.parties, vfl.hidden))
    zeros = (jnp.zeros_like(x), jnp.zeros_like(du))
    return AttackState(x, du, (zeros, zeros), jnp.zeros((n,), jnp.int32))


def _adam_rows(g, m, v, count, lrs, decay=0.0, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma and Ba 2015) with one step count per row (leading axis)."""
    m = jax.tree.map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
    v = jax.tree.map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
    c = (count + 1).astype(jnp.float32)

    def step(mi, vi, lr):
        shape = (-1,) + (1,) * (mi.ndim - 1)
        mhat = mi / (1 - b1 ** c).reshape(shape)
        vhat = vi / (1 - b2 ** c).reshape(shape)
        rate = (lr / jnp.sqrt(1.0 + decay * c)).reshape(shape)
        return -rate * mhat / (jnp.sqrt(vhat) + eps)
    return tuple(map(step, m, v, lrs)), m, v, count + 1


def attack_step(state: AttackState, obs: Observation, labels: jax.Array,
                config: CAFEConfig, image_shape) -> tuple[AttackState, jax.Array]:
    """``inner_steps`` Adam steps on the rows of ``obs.indices`` (the rest untouched)."""
    idx = obs.indices
    grad_fn = jax.value_and_grad(attack_loss, argnums=(0, 1), has_aux=True)

    def inner(s, _):
        xb, dub = s.x[idx], s.du[idx]
        (loss, _), g = grad_fn(xb, dub, obs, labels[idx], config, image_shape)
        rows = jax.tree.map(lambda a: a[idx], s.moments)
        upd, m, v, count = _adam_rows(g, rows[0], rows[1], s.count[idx],
                                        (config.lr, config.du_lr), config.decay)
        moments = jax.tree.map(lambda a, r: a.at[idx].set(r), s.moments, (m, v))
        return AttackState(s.x.at[idx].set(jnp.clip(xb + upd[0], 0.0, 1.0)),
                           s.du.at[idx].set(dub + upd[1]), moments,
                           s.count.at[idx].set(count)), loss

    state, losses = jax.lax.scan(inner, state, None, length=config.inner_steps)
    return state, losses[-1]


def run(images: jax.Array, labels: jax.Array, key: jax.Array, *, iterations: int,
        snapshot_every: int, vfl: VFLConfig = VFLConfig(),
        config: CAFEConfig = CAFEConfig()) -> tuple[jax.Array, jax.Array]:
    """Trains the federation for ``iterations`` and attacks it along the way.

    Args:
      images: (V, N, H, W, C) in [0, 1]: one data set per victim federation.
      labels: (V, N) int labels (held by the server).
      key: PRNG key (model init, batch choice, dummy init), split per victim.
      iterations: observed training iterations (a multiple of ``snapshot_every``).
      snapshot_every: iterations between snapshots of the dummy data set.
      vfl, config: the harness and the attack.

    Returns:
      ``(snapshots, losses)``: (S, V, N, H, W, C) dummy data sets after every
      ``snapshot_every`` iterations, and (S, V) the attack loss at those points.
    """
    if iterations % snapshot_every:
        raise ValueError(f"CAFE: iterations ({iterations}) must be a multiple of "
                         f"snapshot_every ({snapshot_every}).")
    image_shape = tuple(images.shape[2:])
    strips = jax.vmap(lambda a: split(a, vfl.parties))(images)
    n, strip = strips.shape[1], strips.shape[-1]
    if vfl.batch > n:
        raise ValueError(f"CAFE: batch {vfl.batch} is larger than the data set ({n}).")

    def init(k):
        kp, ka, kr = jax.random.split(k, 3)
        return init_params(kp, vfl, strip), init_attack(ka, n, strip, vfl), kr

    def segment(carry, strips_v, labels_v):
        def body(c, _):
            params, attack, k = c
            k, sub = jax.random.split(k)
            params, obs = observe(params, strips_v, labels_v, sub, vfl)
            attack, loss = attack_step(attack, obs, labels_v, config, image_shape)
            return (params, attack, k), loss
        carry, losses = jax.lax.scan(body, carry, None, length=snapshot_every)
        return carry, losses[-1]

    seg = jax.jit(jax.vmap(segment))
    carry = jax.jit(jax.vmap(init))(jax.random.split(key, images.shape[0]))
    snaps, losses = [], []
    for _ in range(iterations // snapshot_every):
        carry, loss = seg(carry, strips, labels)
        snaps.append(jax.vmap(lambda s: merge(s, image_shape))(carry[1].x))
        losses.append(loss)
    return jnp.stack(snaps), jnp.stack(losses)


__all__ = ["THREAT_MODEL", "AttackState", "CAFEConfig", "Observation", "VFLConfig", "attack_loss",
           "attack_step", "init_attack", "init_params", "loss_fn", "merge", "observe", "run",
           "split"]
