"""DMGAN: a malicious client trains a GAN against the shared model (Hitaj et al. 2017).

Hitaj, Ateniese, Perez-Cruz, "Deep Models Under the GAN: Information Leakage from
Collaborative Deep Learning", ACM CCS 2017. Settings from BREADTH.md section 2 (the
LA re-implementation ``fleak/attack/dmgan.py``): the global model gets one extra
"fake" output; generator SGD lr 1e-4, the adversary's discriminator (its local copy of
the shared model) SGD lr 1e-3 (the defaults here; set ``adv_lr`` to the honest clients'
lr when theirs is larger, or the fake class is never learnt); 10 GAN steps per round;
tracked class 3.

Threat model (:data:`THREAT_MODEL`; :class:`DMGANConfig` holds what the adversary does):

- the adversary is *one of the clients*: it *knows* the shared model and the global
  parameters of every round, and its own data, which has no example of the tracked
  class;
- it *changes* what it uploads: its local update trains the shared model to put its
  generated images into the extra "fake" class, which pushes the honest client who
  holds the tracked class to sharpen that class's features in later rounds;
- it *sees* only the global model, never another client's update or data.

Each round (:func:`fedavg_round`):

1. every honest client trains the global model locally on its own data (plain SGD,
   ``local_steps`` steps of ``batch`` samples drawn with replacement; vmapped over the
   honest clients, the victims);
2. the adversary trains its generator for ``gan_steps`` steps to make the *global*
   model classify ``G(z)`` as the tracked class (the shared model is the
   discriminator), then trains its local copy on batches that are half its own data
   and half generated images labelled "fake" (the extra class);
3. the server averages all clients' parameters (FedAvg with equal weights).

The generator (jgi's choice; the paper's is a DCGAN for 28x28 MNIST): latent
``latent`` -> dense 256 + ReLU -> dense 512 + ReLU -> dense H*W*C + sigmoid, images in
[0, 1]; the model sees them normalised with the data set's statistics (``normalize``).
Samples are scored in the experiment by a separately trained classifier.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jgi.attacks.analytic import ThreatModel

from jgi.models import layers
from jgi.models.interface import Model, Params


THREAT_MODEL = ThreatModel(
    knows="as one of the clients: the shared model (with its extra fake class) and the "
          "global parameters of every round, and its own data (no tracked-class example)",
    changes="its own uploads: its local training labels its generated images fake",
    sees="only the global model of every round, never another client's update or data")

@dataclasses.dataclass(frozen=True)
class DMGANConfig:
    """The adversary's and the federation's settings.

    Attributes:
      tracked_class: the class the adversary wants to see (paper: 3).
      latent: generator input dimension.
      gen_optimizer: "sgd" (the paper's / LA's) or "adam" (faster on a CPU budget).
      gen_lr: generator learning rate (SGD 1e-4).
      adv_lr: the adversary's local learning rate (SGD 1e-3).
      gan_steps: generator steps per round (10).
      gen_batch: latent samples per generator step.
      local_steps: SGD steps of every client per round.
      batch: samples per local step.
      client_lr: honest clients' SGD learning rate.
    """

    tracked_class: int = 3
    latent: int = 100
    gen_optimizer: str = "sgd"
    gen_lr: float = 1e-4
    adv_lr: float = 1e-3
    gan_steps: int = 10
    gen_batch: int = 64
    local_steps: int = 10
    batch: int = 32
    client_lr: float = 0.05

    def __post_init__(self):
        if self.gen_optimizer not in ("sgd", "adam"):
            raise ValueError(f"DMGANConfig.gen_optimizer must be 'sgd' or 'adam', got "
                             f"{self.gen_optimizer!r}.")
        for name in ("latent", "gan_steps", "gen_batch", "local_steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"DMGANConfig.{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("gen_lr", "adv_lr", "client_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DMGANConfig.{name} must be > 0, got {getattr(self, name)}.")

    def gen_tx(self) -> optax.GradientTransformation:
        return (optax.sgd(self.gen_lr) if self.gen_optimizer == "sgd"
                else optax.adam(self.gen_lr, b1=0.5))


def generator_init(key: jax.Array, latent: int, image_shape: tuple[int, int, int]) -> Params:
    """The generator of the module docstring (PyTorch-default dense inits)."""
    k1, k2, k3 = jax.random.split(key, 3)
    return {"d1": layers.dense_init(k1, latent, 256), "d2": layers.dense_init(k2, 256, 512),
            "d3": layers.dense_init(k3, 512, math.prod(image_shape))}


def generate(gparams: Params, z: jax.Array, image_shape: tuple[int, int, int]) -> jax.Array:
    """Images in [0, 1] of shape (len(z), H, W, C)."""
    h = jax.nn.relu(layers.dense(gparams["d1"], z))
    h = jax.nn.relu(layers.dense(gparams["d2"], h))
    return jax.nn.sigmoid(layers.dense(gparams["d3"], h)).reshape(z.shape[0], *image_shape)


def _xent(model: Model, params, x, y):
    logits = model.apply(params, x, {})
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def local_sgd(model: Model, params: Params, x: jax.Array, y: jax.Array, key: jax.Array,
              steps: int, batch: int, lr: float) -> Params:
    """``steps`` plain SGD steps on batches drawn with replacement from (x, y)."""
    def step(p, k):
        idx = jax.random.randint(k, (batch,), 0, x.shape[0])
        g = jax.grad(lambda q: _xent(model, q, x[idx], y[idx]))(p)
        return jax.tree.map(lambda a, b: a - lr * b, p, g), None
    params, _ = jax.lax.scan(step, params, jax.random.split(key, steps))
    return params


def generator_loss(model: Model, params: Params, gparams: Params, z: jax.Array,
                   config: DMGANConfig, image_shape, normalize: Callable) -> jax.Array:
    """``-mean log p_model(tracked | G(z))``: the global model is the discriminator."""
    x = normalize(generate(gparams, z, image_shape))
    logp = jax.nn.log_softmax(model.apply(params, x, {}))
    return -jnp.mean(logp[:, config.tracked_class])


def train_generator(model: Model, params: Params, gparams: Params, gopt, key: jax.Array,
                    config: DMGANConfig, image_shape, normalize: Callable):
    """``gan_steps`` generator steps against the (fixed) global parameters."""
    tx = config.gen_tx()

    def step(carry, k):
        g, o = carry
        z = jax.random.normal(k, (config.gen_batch, config.latent))
        loss, grad = jax.value_and_grad(
            lambda q: generator_loss(model, params, q, z, config, image_shape, normalize))(g)
        upd, o = tx.update(grad, o, g)
        return (optax.apply_updates(g, upd), o), loss

    (gparams, gopt), losses = jax.lax.scan(step, (gparams, gopt),
                                           jax.random.split(key, config.gan_steps))
    return gparams, gopt, losses[-1]


def adversary_update(model: Model, params: Params, gparams: Params, x: jax.Array,
                     y: jax.Array, key: jax.Array, config: DMGANConfig, image_shape,
                     normalize: Callable, fake_class: int) -> Params:
    """The adversary's local training: its data plus generated images labelled fake.

    Every local step takes ``batch - batch // 2`` of its own samples and ``batch // 2``
    fresh generated images labelled ``fake_class`` (jgi's choice: with the fakes only a
    small share of a pooled data set, the shared model barely learns the fake class and
    the generator drifts to adversarial noise).
    """
    n_fake = config.batch // 2
    n_real = config.batch - n_fake

    def step(p, k):
        kr, kz = jax.random.split(k)
        idx = jax.random.randint(kr, (n_real,), 0, x.shape[0])
        z = jax.random.normal(kz, (n_fake, config.latent))
        fake = normalize(jax.lax.stop_gradient(generate(gparams, z, image_shape)))
        xs = jnp.concatenate([x[idx], fake])
        ys = jnp.concatenate([y[idx], jnp.full((n_fake,), fake_class, y.dtype)])
        g = jax.grad(lambda q: _xent(model, q, xs, ys))(p)
        return jax.tree.map(lambda a, b: a - config.adv_lr * b, p, g), None

    params, _ = jax.lax.scan(step, params, jax.random.split(key, config.local_steps))
    return params


def fedavg_round(model: Model, params: Params, gparams: Params, gopt, honest_x: jax.Array,
                 honest_y: jax.Array, adv_x: jax.Array, adv_y: jax.Array, key: jax.Array,
                 config: DMGANConfig, normalize: Callable, fake_class: int):
    """One round (module docstring). ``honest_x``: (clients, n, H, W, C) normalised.

    Returns ``(params, gparams, gopt, generator_loss)``.
    """
    image_shape = tuple(adv_x.shape[1:])
    kh, kg, ka = jax.random.split(key, 3)
    honest = jax.vmap(lambda x, y, k: local_sgd(model, params, x, y, k, config.local_steps,
                                                config.batch, config.client_lr))(
        honest_x, honest_y, jax.random.split(kh, honest_x.shape[0]))
    gparams, gopt, gloss = train_generator(model, params, gparams, gopt, kg, config,
                                           image_shape, normalize)
    adv = adversary_update(model, params, gparams, adv_x, adv_y, ka, config, image_shape,
                           normalize, fake_class)
    n = honest_x.shape[0] + 1
    new = jax.tree.map(lambda h, a: (jnp.sum(h, axis=0) + a) / n, honest, adv)
    return new, gparams, gopt, gloss


__all__ = ["THREAT_MODEL", "DMGANConfig", "adversary_update", "fedavg_round", "generate",
           "generator_init", "generator_loss", "local_sgd", "train_generator"]
