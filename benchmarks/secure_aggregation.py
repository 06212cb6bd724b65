"""Secure aggregation's overhead against plaintext FedAvg: time and bytes per client.

    python benchmarks/secure_aggregation.py                      # N = 10, 100; CNN, ResNet-18
    python benchmarks/secure_aggregation.py --clients=10 --models=cnn --lengths=1000
    python benchmarks/secure_aggregation.py --schemes=secagg,lightsecagg --dropout=0.2

For every (N, update length, scheme) the scheme's whole protocol runs once between N
simulated clients and the server (:func:`jgi.fl.secure.secure_sum`, every message
through the same simulated network), all side by side in one process: client seconds
(mean over clients, all stages), server seconds, bytes each client sends and receives
(mean), and the bytes against ``plaintext`` (float32 vectors, server adds them; its
client time is only the message's making, so the JSON's ``time_ratio`` is large by
construction and the table gives absolute times). The
update lengths are the parameter counts of ``--models`` at ``--shape`` (CNN 74,762 and
ResNet-18 11,175,370 at 28x28x1) plus ``--lengths``; the inputs are Gaussian with
standard deviation 1e-2 (costs do not depend on the values).

``--dropout`` drops that fraction of the clients before they send their masked or
encrypted input (after the key stages: SecAgg's server then rebuilds their pairwise
masks with every surviving neighbour; the sum is of the others). Combinations whose
estimated work is over ``--budget`` (seconds, from per-unit costs measured on 2 CPU
cores) or memory over ``--max-gb`` are not run; they are listed with the estimate and
the reason. Then FastSecAgg's cost model (:mod:`jgi.fl.secure.fastsecagg`: operation
counts, not a run) for the same sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence

import numpy as np

from jgi.fl.secure import Dropouts, SCHEMES, SecureAggregation, fastsecagg, he, secure_sum

# Rough seconds per unit on 2 CPU cores (measured while writing this): per client per
# element of masking work, per CKKS ciphertext (encrypt + add + decrypt), per Paillier
# ciphertext (2048-bit encryption, pure-Python phe without gmpy2).
SECONDS_PER = {"element": 2e-8, "ckks": 0.02, "paillier": 0.14}


def lengths_of(models_arg: str, shape: tuple[int, ...]) -> dict[str, int]:
    if not models_arg:
        return {}
    import jax  # pylint: disable=g-import-not-at-top

    from jgi import models  # pylint: disable=g-import-not-at-top
    out = {}
    for name in models_arg.split(","):
        params = jax.eval_shape(lambda k, n=name: models.get(n).init(k, shape),
                                jax.random.key(0))
        out[name] = int(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))
    return out


def estimate(scheme: str, n: int, d: int, paillier_bits: int) -> tuple[float, float]:
    """(seconds, GB) a run is expected to take: a guard, not a measurement."""
    gb = n * d * 8 * 3 / 1e9
    if scheme == "ckks":
        cts = n * math.ceil(d / he.CKKS_SLOTS)
        return cts * SECONDS_PER["ckks"], max(gb, n * math.ceil(d / he.CKKS_SLOTS) * 0.66e-3)
    if scheme == "paillier":
        slots = (paillier_bits - 1) // he.SLOT_BITS
        scale = (paillier_bits / 2048) ** 3
        return n * math.ceil(d / slots) * SECONDS_PER["paillier"] * scale, gb
    per_client = {"plaintext": 1, "secagg": n + 1, "secagg+": 16,
                  "lightsecagg": 3 * n}.get(scheme, n)
    return n * d * per_client * SECONDS_PER["element"], gb


def dropouts_for(config: SecureAggregation, n: int, fraction: float) -> Dropouts:
    """The last ``fraction`` of the clients drop before sending their input (for SecAgg
    the costly case: the server rebuilds their pairwise masks with every surviving
    neighbour)."""
    k = int(fraction * n)
    if k == 0 or config.scheme == "plaintext":
        return Dropouts()
    stage = "encrypted_input" if config.scheme in ("ckks", "paillier") else "masked_input"
    return Dropouts.at(stage, range(n - k, n))


def run_one(scheme: str, n: int, d: int, args, keys_cache: dict) -> dict:
    cfg = SecureAggregation(scheme, seed=args.seed, paillier_bits=args.paillier_bits)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(0, 1e-2, (n, d))
    keys = None
    if scheme in ("ckks", "paillier"):
        k = (scheme, args.paillier_bits)
        if k not in keys_cache:
            keys_cache[k] = he.make_keys(cfg.protocol_config(n, d))
        keys = keys_cache[k]
    dropouts = dropouts_for(cfg, n, args.dropout)
    t0 = time.perf_counter()
    out = secure_sum(x, cfg, dropouts, keys=keys)
    wall = time.perf_counter() - t0
    err = float(np.abs(out.total - x[list(out.contributors)].sum(0)).max())
    c = out.run.costs
    dropped = sum(len(v) for v in dropouts.before.values())
    return {"scheme": scheme, "clients": n, "length": d, "dropped": dropped,
            "client_seconds": float(np.mean(c.client_seconds)),
            "server_seconds": float(c.server_seconds),
            "client_bytes_sent": float(np.mean(c.client_bytes_sent)),
            "client_bytes_received": float(np.mean(c.client_bytes_received)),
            "wall_seconds": wall, "max_abs_error": err, "error_bound": out.error_bound}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,100")
    parser.add_argument("--models", default="cnn,resnet18")
    parser.add_argument("--shape", default="28,28,1")
    parser.add_argument("--lengths", default="1000", help="extra update lengths")
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--budget", type=float, default=120.0,
                        help="skip runs estimated over this many seconds")
    parser.add_argument("--max-gb", type=float, default=6.0)
    parser.add_argument("--paillier-bits", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        clients = [int(c) for c in args.clients.split(",") if c]
        schemes = [s for s in args.schemes.split(",") if s]
        bad = set(schemes) - set(SCHEMES)
        if bad or not schemes:
            raise ValueError(f"--schemes takes a subset of {', '.join(SCHEMES)}, got "
                             f"{args.schemes!r}.")
        if not clients or min(clients) < 2:
            raise ValueError(f"--clients takes integers >= 2, got {args.clients!r}.")
        if not 0 <= args.dropout < 1:
            raise ValueError(f"--dropout is a fraction in [0, 1), got {args.dropout}.")
        sizes = lengths_of(args.models, tuple(int(s) for s in args.shape.split(",")))
        sizes.update({f"vector-{v}": int(v) for v in args.lengths.split(",") if v})
    except (ValueError, KeyError) as e:
        print(f"error: {e}")
        return 2
    schemes = ["plaintext"] + [s for s in schemes if s != "plaintext"]
    rows, skipped, keys_cache = [], [], {}
    for name, d in sorted(sizes.items(), key=lambda kv: kv[1]):
        for n in clients:
            base = None
            for scheme in schemes:
                if scheme in ("ckks", "paillier") and not he.available(scheme):
                    skipped.append(f"{scheme} N={n} {name}: not installed "
                                   f"(pip install {'tenseal' if scheme == 'ckks' else 'phe'})")
                    continue
                secs, gb = estimate(scheme, n, d, args.paillier_bits)
                if secs > args.budget or gb > args.max_gb:
                    skipped.append(f"{scheme} N={n} {name} (d={d}): estimated {secs:.0f} s, "
                                   f"{gb:.1f} GB; over --budget={args.budget:g} s or "
                                   f"--max-gb={args.max_gb:g}")
                    continue
                row = {"model": name, **run_one(scheme, n, d, args, keys_cache)}
                if scheme == "plaintext":
                    base = row
                if base is not None:
                    row["time_ratio"] = row["client_seconds"] / max(base["client_seconds"], 1e-9)
                    row["bytes_ratio"] = row["client_bytes_sent"] / base["client_bytes_sent"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| model | d | N | scheme | client s | server s | client sent | x plaintext "
          "bytes | max error |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['length']} | {r['clients']} | {r['scheme']} | "
              f"{r['client_seconds']:.3g} | {r['server_seconds']:.3g} | "
              f"{r['client_bytes_sent'] / 1e6:.3g} MB | {r.get('bytes_ratio', float('nan')):.3g} | "
              f"{r['max_abs_error']:.2g} |")
    if skipped:
        print("\nNot run:")
        for s in skipped:
            print(f"- {s}")
    print("\nFastSecAgg cost model (operation / element counts, not a run):\n")
    print("| d | N | scheme | client ops | client elements sent | server ops |")
    print("|---:|---:|---|---:|---:|---:|")
    for _, d in sorted(sizes.items(), key=lambda kv: kv[1]):
        for n in clients:
            for scheme, c in fastsecagg.cost_model(n, d).items():
                print(f"| {d} | {n} | {scheme} | {c['client_ops']:.3g} | "
                      f"{c['client_elements_sent']:.3g} | {c['server_ops']:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
