"""FastSecAgg: a cost model only, and why.

Kadhe, Rajaraman, Koyluoglu, Ramchandran, "FastSecAgg: Scalable Secure Aggregation for
Privacy-Preserving Federated Learning" (arXiv 2009.11248, 2020). Each client
secret-shares its (quantised) update directly with FastShare, a multi-secret sharing
scheme built on the FFT over a finite field: a block of ``K`` secrets and random
padding is placed on a length-``N`` vector (one entry per client) and transformed, so
one FFT of length ``N`` (``O(N log N)`` field operations) makes the ``N`` shares of
``K`` secrets. Clients add the shares they receive; the server reconstructs the sum
from the surviving clients' summed shares with FastRecon (iterative erasure decoding
of a product of Reed-Solomon codes).

Why it is not implemented as a protocol here:

- Its guarantees differ in kind from the other schemes': it tolerates dropouts of a
  *random* subset of a constant fraction of the clients (about 10 % in the paper),
  not of *any* subset up to a threshold, and its decoder succeeds only for erasure
  patterns of the right structure; a like-for-like dropout test (worst-case dropouts
  up to the threshold, as for SecAgg and LightSecAgg) does not apply.
- FastShare needs a field with ``N``-th roots of unity and ``N`` a product of small
  primes (the FFT's factorisation); our field ``2^31 - 1`` has no useful ones, so it
  would need a second field and quantisation path.
- Time: the session building this package had two hours for all of the catalogue's
  encrypting defenses.

What :func:`cost_model` gives instead is the order of growth implied by the
construction above (one length-``N`` FFT per block of ``K = ceil(secret_fraction * N)``
secrets), in field operations and field elements, next to SecAgg's and LightSecAgg's
counted the same way, so the schemes can be compared as ``N`` and ``d`` grow. These
are counts derived here from the constructions, not figures from the papers'
tables, and constants (bytes per element, PRG and AES cost) are left out.
"""

from __future__ import annotations

import math


def cost_model(num_clients: int, length: int, secret_fraction: float = 0.5,
               neighbours: int | None = None, target: int | None = None,
               privacy: int | None = None) -> dict[str, dict[str, float]]:
    """Per-client and server operation and element counts of one aggregation.

    Args:
      num_clients: ``N``.
      length: ``d``, entries per update.
      secret_fraction: FastShare's secrets per block as a fraction of ``N`` (the
        rest of the block is privacy padding and dropout redundancy).
      neighbours: SecAgg+'s degree ``k`` (default ``2 ceil(log2 N)``).
      target, privacy: LightSecAgg's ``U`` and ``T`` (defaults as in
        :mod:`jgi.fl.secure.aggregate`).

    Returns:
      ``{scheme: {"client_ops", "client_elements_sent", "server_ops"}}`` for
      "fastsecagg", "secagg", "secagg+", "lightsecagg" (field / ring operations and
      elements; PRG words count as operations). SecAgg's server count is without
      dropouts; each dropped client adds ``d`` per surviving neighbour.
    """
    n, d = num_clients, length
    if n < 2 or d < 1 or not 0 < secret_fraction < 1:
        raise ValueError(f"cost_model needs N >= 2, d >= 1, 0 < secret_fraction < 1; got {n}, "
                         f"{d}, {secret_fraction}.")
    k_secrets = max(1, math.ceil(secret_fraction * n))
    blocks = math.ceil(d / k_secrets)
    log_n = math.log2(n)
    k = neighbours or min(n - 1, 2 * math.ceil(log_n))
    u = target or max(2, math.ceil(0.7 * n))
    t = privacy or max(1, u // 2)
    piece = math.ceil(d / (u - t))
    return {
        "fastsecagg": {"client_ops": blocks * n * log_n + n * blocks,
                       "client_elements_sent": blocks * n,
                       "server_ops": blocks * n * log_n},
        "secagg": {"client_ops": n * d + n**2,
                   "client_elements_sent": d + n,
                   "server_ops": 2 * n * d},
        "secagg+": {"client_ops": (k + 1) * d + k**2,
                    "client_elements_sent": d + k,
                    "server_ops": 2 * n * d},
        "lightsecagg": {"client_ops": n * u * piece + n * piece,
                        "client_elements_sent": d + n * piece,
                        "server_ops": n * d + (u - t) * u * piece},
    }


__all__ = ["cost_model"]
