"""Variational bottleneck layers, the model-level defenses PRECODE and CVB.

They live with the models that build them in (``models.get(name, bottleneck=...)``);
:mod:`jgi.defenses.bottleneck` re-exports them for users who look for them among the
defenses.

PRECODE (Scheliga, Maeder, Seeland, "PRECODE - A Generic Model Extension to Prevent Deep
Gradient Leakage", WACV 2022): a fully connected variational bottleneck placed just
before the last layer. Encoder Linear(in, 2K), ``mu`` = first half, ``sigma`` =
softplus(second half), ``z = mu + eps * sigma``, decoder Linear(K, in); K = 256,
KL weight beta = 1e-3.

CVB (Scheliga, Maeder, Seeland, "Privacy Preserving Federated Learning with
Convolutional Variational Bottlenecks", 2024b): the convolutional version.
``mu = Conv(C -> K, k, same)``, ``s = softplus(clip(Conv(C -> K, k, same), -5, 5))``,
``z = mu + eps * s``, decoder 1x1 Conv(K -> C); convolutions without bias, as in the
authors' code; K = C / 2, at least 8. Placement and (k, beta) per model are given by
the model (CNN: after conv block 0, k = 5, beta = 0.1).

The reparameterisation noise ``eps`` (standard normal, the shape of ``mu``) is an
explicit input: sampled from a key by default, supplied by a well-informed attacker
(WIIG) or optimised (VBIA).

KL term, a deliberate deviation: the authors' code samples with ``s`` as a standard
deviation but computes the KL as if ``s`` were a log-variance
(``-0.5 * sum(1 + s - mu^2 - exp(s))``). jgi uses the KL that matches the sampling,
``KL(N(mu, s^2) || N(0, 1)) = 0.5 * sum(s^2 + mu^2 - 1 - 2 log s)``, summed over the
latent units (K features, or K channels) and averaged over the batch (and, for CVB,
over spatial positions, as the authors' code reduces it). It is >= 0 and 0 exactly at
the prior (mu = 0, s = 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jgi.models import layers

BOTTLENECKS = ("precode", "cvb")


def kl_standard_normal(mu: jax.Array, sigma: jax.Array) -> jax.Array:
    """Elementwise KL(N(mu, sigma^2) || N(0, 1))."""
    return 0.5 * (jnp.square(sigma) + jnp.square(mu) - 1.0 - 2.0 * jnp.log(sigma))


# --- PRECODE ------------------------------------------------------------------------


def precode_init(key: jax.Array, features: int, k: int = 256) -> dict:
    ke, kd = jax.random.split(key)
    return {"encoder": layers.dense_init(ke, features, 2 * k),
            "decoder": layers.dense_init(kd, k, features)}


def precode_eps_shape(batch: int, k: int = 256) -> tuple[int, ...]:
    return (batch, k)


def precode_apply(params: dict, x: jax.Array, eps: jax.Array, beta: float = 1e-3):
    """PRECODE on features (B, in). Returns ``(decoded (B, in), beta * KL)``."""
    stats = layers.dense(params["encoder"], x, name="precode.encoder")
    k = stats.shape[-1] // 2
    mu, sigma = stats[:, :k], jax.nn.softplus(stats[:, k:])
    if eps.shape != mu.shape:
        raise ValueError(f"precode: eps of shape {eps.shape}, expected {mu.shape}.")
    z = mu + eps * sigma
    kl = jnp.mean(jnp.sum(kl_standard_normal(mu, sigma), axis=-1))
    return layers.dense(params["decoder"], z, name="precode.decoder"), beta * kl


# --- CVB ----------------------------------------------------------------------------


def cvb_latent_channels(channels: int) -> int:
    """K = C / 2, at least 8 (the authors' 'adaptive' K)."""
    return max(channels // 2, 8)


def cvb_init(key: jax.Array, channels: int, kernel_size: int) -> dict:
    k = cvb_latent_channels(channels)
    km, ks, kd = jax.random.split(key, 3)
    return {"mu": layers.conv_init(km, kernel_size, channels, k, bias=False),
            "sigma": layers.conv_init(ks, kernel_size, channels, k, bias=False),
            "decoder": layers.conv_init(kd, 1, k, channels, bias=False)}


def cvb_eps_shape(batch: int, height: int, width: int, channels: int) -> tuple[int, ...]:
    return (batch, height, width, cvb_latent_channels(channels))


def cvb_apply(params: dict, x: jax.Array, eps: jax.Array, beta: float, *,
              conv_impl: str = "patches"):
    """CVB on a feature map (B, H, W, C). Returns ``(decoded (B, H, W, C), beta * KL)``."""
    mu = layers.conv(params["mu"], x, stride=1, padding="SAME", impl=conv_impl, name="cvb.mu")
    s = layers.conv(params["sigma"], x, stride=1, padding="SAME", impl=conv_impl,
                    name="cvb.sigma")
    sigma = jax.nn.softplus(jnp.clip(s, -5.0, 5.0))
    if eps.shape != mu.shape:
        raise ValueError(f"cvb: eps of shape {eps.shape}, expected {mu.shape}.")
    z = mu + eps * sigma
    kl = jnp.mean(jnp.sum(kl_standard_normal(mu, sigma), axis=-1))
    out = layers.conv(params["decoder"], z, stride=1, padding="SAME", impl=conv_impl,
                      name="cvb.decoder")
    return out, beta * kl
