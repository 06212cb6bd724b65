"""Throughput of the IG attack step: all victims vmapped vs a Python loop over victims.

    python benchmarks/attack_throughput.py              # table + JSON lines
    python benchmarks/attack_throughput.py --json       # JSON lines only
    python benchmarks/attack_throughput.py --victims=1,8,32,128 --iters=50

Every configuration is measured in the same process, side by side, because shared
machines are noisy: compare the ratios, not absolute numbers across runs.

Implementations:
- ``jgi-vmap``: the runner's compiled chunk (``lax.scan`` over steps, ``vmap`` over all
  victims inside each step), convolutions as patches x matmul (jgi's default).
- ``jgi-vmap-laxconv``: the same with ``lax.conv_general_dilated`` convolutions, whose
  per-victim weight gradients XLA lowers to grouped convolutions.
- ``jgi-loop``: the same compiled chunk for one victim, called once per victim from
  Python (how a one-victim-at-a-time attack runs).

Reported per measurement: victim-iterations per second (median of ``--repeats``), the
compile time, XLA's FLOP count of one victim-iteration, and the fraction of the
device's float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jgi import fl, models
from jgi.attacks import ig, runner

SHAPES = {"28x28x1": (28, 28, 1), "32x32x3": (32, 32, 3)}


def measure_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Float32 FLOP/s of a large matmul on the default device (median)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


def _setup(conv_impl: str, shape, num_victims: int):
    model = models.get("cnn", conv_impl=conv_impl)
    params = model.init(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (num_victims, *shape))
    y = jnp.arange(num_victims) % 10
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, {}))(params)
    cfg = ig.IGConfig()
    problem = ig.problem(model, shape, cfg)
    victims = {"target": updates, "label": y}
    context = {"params": params, "bounds": None}
    state = runner.init_state(problem, victims, context, jax.random.key(2))
    return problem, cfg, victims, context, state


def _step_flops(problem, cfg, state, victims, context) -> float:
    """XLA's FLOP count of one vmapped step (a scan body would be counted only once)."""
    step = jax.jit(jax.vmap(runner.make_step(problem, cfg.stopping()), in_axes=(0, 0, None)))
    cost = step.lower(state, victims, context).compile().cost_analysis()
    if isinstance(cost, list):  # older jax returns one dict per computation
        cost = cost[0] if cost else {}
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _compile(problem, cfg, state, victims, context, iters):
    chunk = jax.jit(runner.make_chunk(problem, cfg.stopping(), iters))
    t = time.perf_counter()
    compiled = chunk.lower(state, victims, context).compile()
    compile_s = time.perf_counter() - t
    return compiled, compile_s, _step_flops(problem, cfg, state, victims, context)


def bench_vmap(conv_impl, shape, num_victims, iters, repeats):
    problem, cfg, victims, context, state = _setup(conv_impl, shape, num_victims)
    compiled, compile_s, flops = _compile(problem, cfg, state, victims, context, iters)
    jax.block_until_ready(compiled(state, victims, context))  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(state, victims, context))
        times.append(time.perf_counter() - t)
    return num_victims * iters / statistics.median(times), compile_s, flops / num_victims


def bench_loop(conv_impl, shape, num_victims, iters, repeats):
    problem, cfg, victims, context, state = _setup(conv_impl, shape, num_victims)
    take = lambda tree, i: jax.tree.map(lambda a: a[i:i + 1], tree)  # noqa: E731
    singles = [(take(state, i), take(victims, i)) for i in range(num_victims)]
    compiled, compile_s, flops = _compile(problem, cfg, singles[0][0], singles[0][1], context,
                                          iters)
    jax.block_until_ready(compiled(*singles[0], context))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for s, v in singles:
            out = compiled(s, v, context)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
    return num_victims * iters / statistics.median(times), compile_s, flops


IMPLS = {
    "jgi-vmap": (bench_vmap, "patches"),
    "jgi-vmap-laxconv": (bench_vmap, "lax"),
    "jgi-loop": (bench_loop, "patches"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victims", default="8,128", help="comma-separated victim counts")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="28x28x1,32x32x3")
    parser.add_argument("--impls", default=",".join(IMPLS), help=",".join(IMPLS))
    parser.add_argument("--iters", type=int, default=20, help="attack steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only JSON lines")
    args = parser.parse_args()
    victim_counts = [int(v) for v in args.victims.split(",")]
    impls = args.impls.split(",")
    for name in impls:
        if name not in IMPLS:
            parser.error(f"unknown impl {name!r}; valid: {', '.join(IMPLS)}")
    for name in args.shapes.split(","):
        if name not in SHAPES:
            parser.error(f"unknown shape {name!r}; valid: {', '.join(SHAPES)}")

    device = jax.devices()[0]
    peak = measure_matmul_peak()
    records = []
    for shape_name in args.shapes.split(","):
        for v in victim_counts:
            for impl in impls:
                fn, conv_impl = IMPLS[impl]
                vips, compile_s, flops = fn(conv_impl, SHAPES[shape_name], v, args.iters,
                                            args.repeats)
                rec = {
                    "impl": impl, "model": "cnn", "input_shape": shape_name, "victims": v,
                    "attack": "ig", "victim_iters_per_s": round(vips, 1),
                    "compile_s": round(compile_s, 2), "flops_per_victim_iter": flops,
                    "peak_flops": peak,
                    "peak_fraction": round(flops * vips / peak, 4) if flops == flops else None,
                    "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
                    "iters": args.iters, "repeats": args.repeats,
                }
                records.append(rec)
                if args.json:
                    print(json.dumps(rec), flush=True)
    if args.json:
        return
    print(f"device {records[0]['device']}, float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'shape':9} {'victims':>7} {'impl':18} {'vict-it/s':>10} {'vs loop':>8} "
          f"{'compile s':>9} {'MFLOP/v-it':>10} {'peak %':>7}")
    for r in records:
        loop = next((q for q in records if q["impl"] == "jgi-loop" and q["victims"] == r["victims"]
                     and q["input_shape"] == r["input_shape"]), None)
        ratio = f"{r['victim_iters_per_s'] / loop['victim_iters_per_s']:.2f}x" if loop else "-"
        pf = f"{100 * r['peak_fraction']:.2f}" if r["peak_fraction"] is not None else "-"
        print(f"{r['input_shape']:9} {r['victims']:>7} {r['impl']:18} "
              f"{r['victim_iters_per_s']:>10.1f} {ratio:>8} {r['compile_s']:>9.2f} "
              f"{r['flops_per_victim_iter'] / 1e6:>10.2f} {pf:>7}")
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
