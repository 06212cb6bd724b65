"""Variational bottleneck layers, the model-level defenses PRECODE and CVB.

They live with the models that build them in (``models.get(name, bottleneck=...)``);
:mod:`jgi.defenses.bottleneck` re-exports them for users who look for them among the
defenses.

PRECODE (Scheliga, Maeder, Seeland, "PRECODE - A Generic Model Extension to Prevent Deep
Gradient Leakage", WACV 2022): a fully connected variational bottleneck. Encoder
Linear(in, 2K), ``mu`` = first half, ``sigma`` = softplus(second half),
``z = mu + eps * sigma``, decoder Linear(K, in); K = 256, KL weight beta = 1e-3. On a
feature map the input is flattened and the decoded vector reshaped back, as the
authors' module does (``Linear(prod(in_shape), 2K)``). Its KL is the Gaussian KL of the
sampling, summed over the K units, averaged over the batch and **divided by ln 2 (in
bits)**, as the PRECODE authors' loss computes it (AUTHORS-CODE.md, PRECODE at c66adc4);
the penalty is ``beta * KL_bits``. Where it sits is the model's choice: the models of
the core ablation paper (Scheliga et al. 2024, "Combining stochastic defenses ...")
put it by default in the CVB framework's position 0 (``precode_position="slot0"``:
after conv block 0 of the CNN, after layer1 of ResNet-18, after transformer block 0 of
the ViT), with the placement just before the classifier, PRECODE's own paper's, as
``precode_position="classifier"``.

CVB (Scheliga, Maeder, Seeland, "Privacy Preserving Federated Learning with
Convolutional Variational Bottlenecks", 2024b): the convolutional version.
``mu = Conv(C -> K, k, same)``, ``s = softplus(clip(Conv(C -> K, k, same), -5, 5))``,
``z = mu + eps * s``, decoder 1x1 Conv(K -> C); convolutions without bias, as in the
authors' code; K = C / 2, at least 8. Placement and (k, beta) per model are given by
the model (CNN: after conv block 0, k = 5, beta = 0.1).

The reparameterisation noise ``eps`` (standard normal, the shape of ``mu``) is an
explicit input: sampled from a key by default, supplied by a well-informed attacker
(WIIG) or optimised (VBIA).

CVB's KL term, a deliberate deviation: the authors' code samples with ``s`` as a standard
deviation but computes the KL as if ``s`` were a log-variance
(``-0.5 * sum(1 + s - mu^2 - exp(s))``). jgi uses the KL that matches the sampling,
``KL(N(mu, s^2) || N(0, 1)) = 0.5 * sum(s^2 + mu^2 - 1 - 2 log s)``, summed over the
latent units (K features, or K channels) and averaged over the batch (and, for CVB,
over spatial positions, as the authors' code reduces it), in nats for CVB and in bits
for PRECODE (the two authors' codes differ there). It is >= 0 and 0 exactly at the prior
(mu = 0, s = 1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jgi.models import layers

BOTTLENECKS = ("precode", "cvb")
# Where the models of the core paper put PRECODE: "slot0", the CVB framework's position
# 0 (the default), or "classifier", on the features just before the classifier.
PRECODE_POSITIONS = ("slot0", "classifier")


def check_precode_position(model: str, position: str) -> None:
    """Raises a ValueError naming the model and the valid positions."""
    if position not in PRECODE_POSITIONS:
        raise ValueError(f"{model}: unknown precode_position {position!r}; valid: "
                         f"{', '.join(PRECODE_POSITIONS)} (slot0: the CVB framework's "
                         "position 0, the default; classifier: just before the classifier).")


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
    """PRECODE on features (B, ...), flattened to (B, in) and decoded back to x's shape.

    Returns:
      ``(decoded, beta * KL_bits)``: the decoded features of x's shape, and beta times
      the KL in bits (summed over the K latent units, averaged over the batch, divided
      by ln 2, as the PRECODE authors compute it).
    """
    flat = x.reshape(x.shape[0], -1)
    stats = layers.dense(params["encoder"], flat, name="precode.encoder")
    k = stats.shape[-1] // 2
    mu, sigma = stats[:, :k], jax.nn.softplus(stats[:, k:])
    if eps.shape != mu.shape:
        raise ValueError(f"precode: eps of shape {eps.shape}, expected {mu.shape}.")
    z = mu + eps * sigma
    kl_bits = jnp.mean(jnp.sum(kl_standard_normal(mu, sigma), axis=-1)) / math.log(2.0)
    decoded = layers.dense(params["decoder"], z, name="precode.decoder")
    return decoded.reshape(x.shape), beta * kl_bits


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
              conv_impl: str = "patches", fused: bool = False):
    """CVB on a feature map (B, H, W, C). Returns ``(decoded (B, H, W, C), beta * KL)``.

    ``fused=True`` computes the same function as one convolution with ``mu``'s and
    ``sigma``'s kernels side by side (k, k, C, 2K), split after, and the 1x1 decoder as
    a plain channel matmul: the k x k patches of x are multiplied once by a matrix of
    2K columns instead of twice by K, and no 1-tap patch copy is made for the decoder.
    Equal to the plain formulation to float32 rounding, values and gradients to second
    order (``tests/models/test_bottleneck_fused.py``). Issue 23; not yet timed against
    the plain one on a quiet machine, hence off by default.
    """
    if fused:
        return _cvb_apply_fused(params, x, eps, beta, conv_impl=conv_impl)
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


def _cvb_apply_fused(params: dict, x: jax.Array, eps: jax.Array, beta: float, *,
                     conv_impl: str):
    w_mu, w_sigma, w_dec = params["mu"]["w"], params["sigma"]["w"], params["decoder"]["w"]
    k = w_mu.shape[-1]
    if eps.shape != (*x.shape[:-1], k):
        raise ValueError(f"cvb: eps of shape {eps.shape}, expected {(*x.shape[:-1], k)}.")
    stats = layers.conv({"w": jnp.concatenate([w_mu, w_sigma], axis=-1)}, x, stride=1,
                        padding="SAME", impl=conv_impl, name="cvb.mu_sigma")
    mu, s = stats[..., :k], stats[..., k:]
    sigma = jax.nn.softplus(jnp.clip(s, -5.0, 5.0))
    z = mu + eps * sigma
    kl = jnp.mean(jnp.sum(kl_standard_normal(mu, sigma), axis=-1))
    if w_dec.shape[:2] != (1, 1):
        raise ValueError(f"cvb: the fused formulation needs a 1x1 decoder, got kernel "
                         f"{w_dec.shape[:2]}; use fused=False.")
    out = jnp.einsum("bhwk,kc->bhwc", z, w_dec[0, 0])
    return out, beta * kl
