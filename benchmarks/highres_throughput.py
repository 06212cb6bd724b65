"""Throughput of the Health attack per resolution: vmapped over victims vs one at a time.

    python benchmarks/highres_throughput.py                          # table, then JSON lines
    python benchmarks/highres_throughput.py --resolutions=64,128,256 --victims=2 --steps=2

The attack of :mod:`jgi.attacks.highres` (the paper's loss at the resolution's weights,
PyTorch-style L-BFGS: one step = up to 20 inner iterations, each one objective
evaluation) on the Health LeNet (``lenet(**HEALTH_OPTIONS)``, Sigmoid) against one-step
gradients of random images, for each side in ``--resolutions``:

- ``jgi-vmap``: the runner's compiled chunk (:func:`jgi.attacks.runner.make_chunk`,
  ``--steps`` steps in a ``lax.scan``, ``vmap`` over ``--victims``);
- ``jgi-loop``: the same chunk compiled for one victim, called once per victim.

Reported: victim L-BFGS steps per second, objective evaluations per second (a step can
end early at a tolerance), the median of ``--repeats`` interleaved timings, and the
first call (compilation plus one run). Both start from the same state every repeat.
Shared machines are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi.attacks import highres, runner
from jgi.fl.client import client_update
from jgi.models.lenet import HEALTH_OPTIONS, lenet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import side_by_side  # noqa: E402  (benchmarks/timing.py)


def chunks(side: int, victims: int, steps: int, seed: int = 0):
    """``(run_vmap, run_loop)`` for one resolution; each returns the evaluations it made."""
    shape = (side, side, 3)
    model = lenet(**HEALTH_OPTIONS)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(seed), shape)
    x = jax.random.uniform(jax.random.key(seed + 1), (victims, 1, *shape))
    y = jnp.arange(victims, dtype=jnp.int32).reshape(victims, 1) % 2
    updates = jax.jit(jax.vmap(lambda xi, yi: client_update(model, params, xi, yi)))(x, y)
    config = highres.for_resolution(side, max_iters=10 ** 6)
    problem = highres.problem(model, shape, config)
    vic = {"target": updates, "label": y}
    context = {"params": params}
    state = runner.init_state(problem, vic, context, jax.random.key(seed + 2))
    chunk = jax.jit(runner.make_chunk(problem, config.stopping(), steps, victim_tile=None))
    pick = [jax.tree.map(lambda a, i=i: a[i:i + 1], (state, vic)) for i in range(victims)]

    def evals(s):
        return int(np.sum(np.asarray(s.opt_state.func_evals)))

    def run_vmap():
        out = chunk(state, vic, context)
        jax.block_until_ready(out)
        return evals(out)

    def run_loop():
        total = 0
        for s, v in pick:
            out = chunk(s, v, context)
            jax.block_until_ready(out)
            total += evals(out)
        return total

    return run_vmap, run_loop


def measure(side: int, victims: int, steps: int, repeats: int) -> list[dict]:
    run_vmap, run_loop = chunks(side, victims, steps)
    timed = side_by_side({"jgi-vmap": run_vmap, "jgi-loop": run_loop}, repeats)
    rows = []
    for name, t in timed.items():
        rows.append({"impl": name, "resolution": side, "variables": side * side * 3,
                     "victims": victims, "steps": steps,
                     "victim_steps_per_s": victims * steps / t.seconds,
                     "evals_per_s": t.result / t.seconds, "seconds": t.seconds,
                     "first_call_s": t.first_call_s,
                     "cpu_count": os.cpu_count(), "backend": jax.default_backend()})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| side | impl | victims | steps/s | evals/s | s (median) | first call s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['resolution']} | {r['impl']} | {r['victims']} | "
                     f"{r['victim_steps_per_s']:.3g} | {r['evals_per_s']:.3g} | "
                     f"{r['seconds']:.3g} | {r['first_call_s']:.3g} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", default="32,64,128")
    ap.add_argument("--victims", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="only the JSON lines")
    args = ap.parse_args(argv)
    sides = [int(v) for v in args.resolutions.split(",") if v]
    if not sides or min(sides) < 8 or args.victims < 1 or args.steps < 1 or args.repeats < 1:
        print("error: resolutions must be sides >= 8; victims, steps and repeats >= 1.")
        return 2
    rows = [row for side in sides for row in measure(side, args.victims, args.steps,
                                                     args.repeats)]
    if not args.json:
        print(table(rows))
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
