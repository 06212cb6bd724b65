"""DP-SGD's clipped sum for one training batch: two formulations side by side in one run.

    python benchmarks/dp_clipping.py                       # CNN + PRECODE, batch 64
    python benchmarks/dp_clipping.py --defenses=dp,cvb --batch=64 --repeats=20

- ``privatize``: per-example gradients (``vmap`` of ``grad``), each scaled by its
  clipping factor, summed (``jgi.defenses.dp.privatize``).
- ``weighted-loss``: the per-example gradients only for their norms, then one gradient
  of the factor-weighted loss (``jgi.fl.client.clipped_gradient_sum``, what
  ``client_update`` uses for batches of more than one example, e.g. FedAvg's local
  training).

Both are jitted and checked to agree before timing; calls alternate (repeat r of both
before repeat r + 1) and the median is reported. Compare the ratio, not absolute times
across runs (shared machines are noisy). One JSON line per formulation, then the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgi import defenses, fl, models
from jgi.defenses import dp as dp_lib


def build(model_name: str, spec: str, batch: int, shape=(28, 28, 1)):
    stack = defenses.from_names(spec)
    if stack.dp is None:
        raise ValueError(f"--defenses must include dp, got {spec!r}.")
    model = models.get(model_name, **stack.model_options())
    dp_only = dataclasses.replace(stack, prune=0.0)  # time the clipping alone
    params = model.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (batch, *shape))
    y = jnp.arange(batch) % 10
    r = fl.sample_randomness(jax.random.key(2), model, params, stack, shape, batch)

    def by_privatize(p):
        per_example = fl.per_example_gradients(model, p, x, y, r.model)
        return dp_lib.privatize(per_example, stack.dp, r.dp)

    def by_weighted_loss(p):
        return fl.client_update(model, p, x, y, r, dp_only)

    return params, {"privatize": jax.jit(by_privatize),
                    "weighted-loss": jax.jit(by_weighted_loss)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    parser.add_argument("--defenses", default="dp,precode")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if args.batch < 2 or args.repeats < 1:
        parser.error(f"need --batch >= 2 (batch 1 takes the privatize path) and "
                     f"--repeats >= 1, got {args.batch} and {args.repeats}")
    try:
        params, fns = build(args.model, args.defenses, args.batch)
    except ValueError as e:
        print(f"error: {e}")
        return 2
    outs = {name: jax.block_until_ready(f(params)) for name, f in fns.items()}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 outs["privatize"], outs["weighted-loss"])
    times = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(params))
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, m in medians.items():
        print(json.dumps({"formulation": name, "model": args.model, "defenses": args.defenses,
                          "batch": args.batch, "median_seconds": m, "repeats": args.repeats,
                          "device": str(jax.devices()[0])}))
    print(f"privatize / weighted-loss: {medians['privatize'] / medians['weighted-loss']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
