"""Throughput of multi-step IG and DLF: victims vmapped vs one victim at a time, one run.

    python benchmarks/multistep_throughput.py                 # table, then JSON lines
    python benchmarks/multistep_throughput.py --json
    python benchmarks/multistep_throughput.py --model=cnn --victims=8 --samples=8 --batch=4

One victim is one client's FedAvg update (``--samples`` images, batch ``--batch``,
``--epochs`` epochs of plain SGD); every attack iteration differentiates through the
whole simulated local training. For each attack (``--attacks``: ``multistep`` = the
consistent multi-step IG, ``dlf``) two implementations run the same compiled runner
chunk (:func:`jgi.attacks.runner.make_chunk`, ``--iters`` steps per call):

- ``jgi-vmap``: all ``--victims`` victims in one call (``vmap`` inside each step, the
  runner's CPU tiling);
- ``jgi-loop``: the chunk compiled for one victim and called once per victim from Python.

Calls are interleaved (repeat r of each before repeat r + 1 of any) and the median of
``--repeats`` is reported as ``victim_iters_per_s`` (victims x iterations / seconds),
with ``compile_s``. Shared machines are noisy: compare the two rows of one attack
within a run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jgi import fl, models
from jgi.attacks import dlf, ig, multistep, runner

ATTACKS = ("multistep", "dlf")
MODELS = ("mlp", "cnn")


def _problem(attack, model, shape, obs, n):
    if attack == "multistep":
        setup = multistep.consistent_setup(obs)
        prob = multistep.problem(model, shape, setup, ig.IGConfig())
        extra = {"key": jax.random.key_data(jax.random.split(jax.random.key(1),
                                                             _victims(obs)))}
        context = {"params": obs.params, "bounds": None}
        labels_shape = (n,)
    else:
        config = dlf.DLFConfig()
        prob = dlf.problem(model, shape, obs.local, n, config)
        extra = {}
        context = {"params": obs.params, "bounds": None,
                   "weights": dlf.layer_weights(model, obs.params),
                   "kernel": dlf.order_kernel(config, shape[-1])}
        labels_shape = (n,)
    v = _victims(obs)
    labels = jnp.broadcast_to(jnp.arange(labels_shape[0]) % 10, (v, *labels_shape))
    victims = {"target": obs.update, "label": labels.astype(jnp.int32), **extra}
    return prob, victims, context


def _victims(obs) -> int:
    return jax.tree.leaves(obs.update)[0].shape[0]


def _compiled(prob, victims, context, iters, tile):
    stopping = runner.StoppingRule(max_iters=10**9, loss_below=-math.inf, patience=10**9)
    state = runner.init_state(prob, victims, context, jax.random.key(2))
    chunk = jax.jit(runner.make_chunk(prob, stopping, iters, victim_tile=tile))
    t0 = time.perf_counter()
    compiled = chunk.lower(state, victims, context).compile()
    compile_s = time.perf_counter() - t0

    def call():
        jax.block_until_ready(compiled(state, victims, context))

    return call, compile_s


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", choices=MODELS)
    parser.add_argument("--width", type=int, default=256, help="the MLP's hidden units")
    parser.add_argument("--shape", default="28x28x1", help="input HxWxC")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    bad = [a for a in attacks if a not in ATTACKS]
    if bad or args.victims < 1 or args.iters < 1 or args.repeats < 1:
        parser.error(f"unknown attacks {bad} (valid: {', '.join(ATTACKS)}) or a count < 1")
    try:
        shape = tuple(int(t) for t in args.shape.split("x"))
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--shape must be HxWxC, e.g. 28x28x1, got {args.shape!r}")
    model = models.get(args.model, **({"width": args.width} if args.model == "mlp" else {}))
    params = model.init(jax.random.key(0), shape)
    local = fl.LocalTraining(epochs=args.epochs, batch_size=args.batch, lr=0.004)
    n, v = args.samples, args.victims
    x = jax.random.normal(jax.random.key(3), (v, n, *shape))
    y = jnp.broadcast_to(jnp.arange(n) % 10, (v, n))
    updates = jax.jit(jax.vmap(lambda xi, yi, k: fl.observe(
        model, params, xi, yi, k, local=local).update))(x, y, jax.random.split(
            jax.random.key(4), v))
    obs = fl.Observation(update=updates, params=params, local=local, num_samples=n)
    one = obs.replace(update=jax.tree.map(lambda a: a[:1], updates))
    records = []
    for attack in attacks:
        prob, victims, context = _problem(attack, model, shape, obs, n)
        prob1, victims1, _ = _problem(attack, model, shape, one, n)
        vmapped, c_vmap = _compiled(prob, victims, context, args.iters,
                                    runner.default_victim_tile())
        if v == 1:  # the one-victim chunk is the vmapped one: no second compilation
            single, c_loop = vmapped, c_vmap
        else:
            single, c_loop = _compiled(prob1, victims1, context, args.iters, None)

        def loop(single=single):
            for _ in range(v):
                single()

        vmapped()  # warm up both before timing
        loop()
        times = {"jgi-vmap": [], "jgi-loop": []}
        for _ in range(args.repeats):
            for impl, fn in (("jgi-vmap", vmapped), ("jgi-loop", loop)):
                t0 = time.perf_counter()
                fn()
                times[impl].append(time.perf_counter() - t0)
        for impl, comp in (("jgi-vmap", c_vmap), ("jgi-loop", c_loop)):
            med = statistics.median(times[impl])
            records.append({"attack": attack, "impl": impl, "model": args.model,
                            "input_shape": list(shape),
                            "victims": v, "samples": n, "batch": args.batch,
                            "epochs": args.epochs, "local_steps": local.num_steps(n),
                            "iters": args.iters,
                            "victim_iters_per_s": v * args.iters / med,
                            "compile_s": comp, "backend": jax.default_backend()})
    if not args.json:
        print("| attack | impl | victims | local steps | victim-iterations/s | compile s |")
        print("|---|---|---:|---:|---:|---:|")
        for r in records:
            print(f"| {r['attack']} | {r['impl']} | {r['victims']} | {r['local_steps']} | "
                  f"{r['victim_iters_per_s']:.1f} | {r['compile_s']:.1f} |")
    for r in records:
        print(json.dumps(r))
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
