"""Prints the (epsilon, delta) of a client's DP-SGD training, through dp-accounting.

    python -m experiments.dp_epsilon --sigma=1.1 --epochs=10
    python -m experiments.dp_epsilon --sigma=1e-3 --rounds=300     # the paper's Table 1 noise

A client with ``--client-size`` examples runs ``--epochs`` local epochs per round for
``--rounds`` rounds with batch ``--batch-size``: ``steps = rounds * epochs * ceil(n / b)``
noisy steps with sampling rate ``b / n`` (Poisson sampling assumed, as accountants do).
The privacy against gradient inversion that the paper measures does not need a
meaningful epsilon; this script shows how far from one the paper's settings are.
"""

from __future__ import annotations

import argparse
import math

from jgi.defenses import dp


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=1e-3, help="noise multiplier")
    parser.add_argument("--clip", type=float, default=20.0, help="clipping norm tau")
    parser.add_argument("--client-size", type=int, default=5400,
                        help="examples per client (MNIST paper split: 5400)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--accountant", default="rdp", choices=["rdp", "pld"])
    args = parser.parse_args(argv)
    steps = args.rounds * args.epochs * math.ceil(args.client_size / args.batch_size)
    q = args.batch_size / args.client_size
    config = dp.DPConfig(clip_norm=args.clip, noise_multiplier=args.sigma)
    eps = dp.epsilon(config, steps=steps, sampling_rate=q, delta=args.delta,
                     accountant=args.accountant)
    print(f"DP-SGD sigma={args.sigma:g} tau={args.clip:g}: {steps} steps at sampling rate "
          f"{q:.5f} -> epsilon = {eps:.6g} at delta = {args.delta:g} ({args.accountant})")


if __name__ == "__main__":
    main()
