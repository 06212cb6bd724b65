"""Throughput of GRNN's and GIAS's steps: vmapped over victims against one victim at a time.

    python benchmarks/grnn_gias_throughput.py                  # table, then one JSON line each
    python benchmarks/grnn_gias_throughput.py --victims=8 --steps=5 --json

Three steps, each the runner's compiled chunk (:func:`jgi.attacks.runner.make_chunk`:
``--steps`` steps in a ``lax.scan``, ``vmap`` over the victims inside each step):

- ``grnn``: one optimiser step of GRNN's generator and label head (:mod:`jgi.attacks.grnn`,
  GRNN's generator of the image's shape, RMSprop), batch 1 per victim;
- ``gias-latent``: one Adam step of GIAS's latent search (:mod:`jgi.attacks.gias`),
  ``--batch`` latent codes per victim through the fixed generator;
- ``gias-params``: one Adam step of GIAS's generator-parameter search, one generator
  copy per image.

The client's model is DLG's LeNet on MNIST-shaped images (28x28x1); GIAS's generator is
jgi's MNIST generator shape (:func:`jgi.models.generator.spec_for`, untrained: the
step's cost does not depend on the weights). Implementations: ``jgi-vmap`` (the chunk
compiled for all ``--victims``) and ``jgi-loop`` (the same chunk compiled for one
victim, called once per victim from Python). Every call starts from the same state (the
same work); ``first call s`` is the compilation plus one call. Timed interleaved, the
median of ``--repeats`` (``benchmarks/timing.py``). Shared machines are noisy: compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jgi import models  # noqa: E402
from jgi.attacks import gias, grnn, runner  # noqa: E402
from jgi.fl.client import client_update  # noqa: E402
from jgi.models import generator as gen_lib  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import side_by_side  # noqa: E402  (benchmarks/timing.py)

STEPS = ("grnn", "gias-latent", "gias-params")


def setup(victims: int, batch: int, side: int, channels, width: int, latent: int):
    """LeNet, params, a generator and per-victim batch gradients of its images."""
    shape = (side, side, 1)
    model = models.get("lenet", channels=channels, strides=(2,) * len(channels))
    params = model.init(jax.random.key(0), shape)
    spec = gen_lib.GeneratorSpec(shape, latent_dim=latent, width=width)
    init_fn, apply_fn = gen_lib.generator(spec)
    gen_params = init_fn(jax.random.key(1))

    @jax.jit
    def observe(z, y):
        x = jax.vmap(apply_fn, in_axes=(None, 0))(gen_params, z)
        return jax.vmap(lambda xv, yv: client_update(model, params, xv, yv))(x, y)

    z = jax.random.normal(jax.random.key(2), (victims, batch, latent))
    y = jnp.arange(victims * batch, dtype=jnp.int32).reshape(victims, batch) % 10
    batch1 = observe(z[:, :1], y[:, :1])
    full = observe(z, y)
    return model, params, shape, spec, apply_fn, gen_params, batch1, full, y, z


def problems(victims: int, batch: int, side: int, channels, width: int, latent: int):
    """``{step name: (problem, victims data, context)}``."""
    model, params, shape, spec, apply_fn, gen_params, batch1, full, y, z = setup(
        victims, batch, side, channels, width, latent)
    norm = grnn.normalization_context(None, 1)
    g_config = grnn.GRNNConfig(max_iters=10 ** 6, latent_dim=latent, width=width)
    zg = jax.random.normal(jax.random.key(3), (victims, 1, latent))
    out = {"grnn": (grnn.problem(model, shape, 10, g_config),
                    {"target": batch1, "z": zg}, {"params": params, **norm})}
    s_config = gias.GIASConfig(batch_size=batch, latent_iters=10 ** 6, param_iters=10 ** 6)
    context = {"params": params, "gen": gen_params, **norm}
    out["gias-latent"] = (gias.latent_problem(model, apply_fn, latent, shape, 10, s_config),
                          {"target": full, "label": y}, context)
    out["gias-params"] = (gias.param_problem(model, apply_fn, shape, s_config),
                          {"target": full, "label": y, "z": z}, context)
    return out


def chunks(problem, victims_data, context, steps: int):
    """``(run_vmap, run_loop)``: callables that run ``steps`` steps from one state."""
    stopping = runner.StoppingRule(10 ** 6, -float("inf"), 10 ** 6)
    state = runner.init_state(problem, victims_data, context, jax.random.key(7))
    chunk = jax.jit(runner.make_chunk(problem, stopping, steps, victim_tile=None))
    n = jax.tree.leaves(victims_data)[0].shape[0]
    pick = [jax.tree.map(lambda a, i=i: a[i:i + 1], (state, victims_data)) for i in range(n)]

    def run_vmap():
        jax.block_until_ready(chunk(state, victims_data, context))

    def run_loop():
        for s, v in pick:
            jax.block_until_ready(chunk(s, v, context))

    return run_vmap, run_loop


def measure(victims: int, steps: int, repeats: int, batch: int = 4, side: int = 28,
            channels=(12, 12), width: int = 32, latent: int = 128,
            which=STEPS) -> list[dict]:
    rows = []
    built = problems(victims, batch, side, channels, width, latent)
    for name in which:
        run_vmap, run_loop = chunks(*built[name], steps)
        timings = side_by_side({"jgi-vmap": run_vmap, "jgi-loop": run_loop}, repeats)
        for impl, t in timings.items():
            rows.append({"step": name, "impl": impl, "victims": victims,
                         "batch": 1 if name == "grnn" else batch, "steps": steps,
                         "image_size": side, "channels": list(channels), "width": width,
                         "latent": latent, "victim_steps_per_s": victims * steps / t.seconds,
                         "seconds": t.seconds, "first_call_s": t.first_call_s,
                         "cpu_count": os.cpu_count(), "backend": jax.default_backend()})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| step | impl | victims | batch | steps | victim-steps/s | first call s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['impl']} | {r['victims']} | {r['batch']} | "
                     f"{r['steps']} | {r['victim_steps_per_s']:.2f} | {r['first_call_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="GIAS images per victim")
    parser.add_argument("--image-size", type=int, default=28, choices=(28,),
                        help="MNIST-shaped images (jgi's generators: 28x28x1)")
    parser.add_argument("--channels", default="12,12", help="LeNet channels per conv")
    parser.add_argument("--width", type=int, default=32, help="generators' width")
    parser.add_argument("--latent", type=int, default=128, help="latent size")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"steps to time (comma-separated from {', '.join(STEPS)})")
    parser.add_argument("--json", action="store_true", help="JSON lines only")
    args = parser.parse_args(argv)
    if min(args.victims, args.steps, args.repeats, args.batch, args.width, args.latent) < 1:
        parser.error("victims, steps, repeats, batch, width and latent must be >= 1")
    which = tuple(args.only.split(","))
    unknown = sorted(set(which) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; valid: {', '.join(STEPS)}")
    channels = tuple(int(v) for v in args.channels.split(","))
    rows = measure(args.victims, args.steps, args.repeats, args.batch, args.image_size,
                   channels, args.width, args.latent, which)
    if not args.json:
        print(table(rows) + "\n")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
