"""Throughput of GradInversion: vmapped over victims vs one victim at a time.

    python benchmarks/gradinversion_throughput.py              # table, then JSON lines
    python benchmarks/gradinversion_throughput.py --model=resnet18_bn --victims=2 --batch=8

GradInversion (:mod:`jgi.attacks.gradinversion`) on a BatchNorm model of
:mod:`jgi.models.resnet_bn` against batch updates of random images, ``--groups``
candidates per victim. A victim-step is one Adam step of all of a victim's group
candidates (each a gradient of the gradient distance plus the BatchNorm term).

- ``jgi-vmap``: the runner's compiled chunk (:func:`jgi.attacks.runner.make_chunk`,
  ``--steps`` steps in a ``lax.scan``, ``vmap`` over all ``--victims``).
- ``jgi-loop``: the same chunk compiled for one victim, called once per victim.

Both run from the same state every repeat; ``first call s`` is compilation plus one
call; the median of ``--repeats`` interleaved timings is reported (shared machines are
noisy: compare the ratio within one run).
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

from jgi.attacks import gradinversion as gi  # noqa: E402
from jgi.attacks import runner  # noqa: E402
from jgi.fl.client import client_update  # noqa: E402
from jgi.models import resnet_bn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import side_by_side  # noqa: E402  (benchmarks/timing.py)


def build(model_name: str, width: int):
    if model_name == "bn_cnn":
        return resnet_bn.bn_cnn(10, width=width)
    if model_name == "resnet18_bn":
        return resnet_bn.resnet18_bn(10)
    raise ValueError(f"unknown model {model_name!r}; valid: bn_cnn, resnet18_bn")


def measure(model_name: str, victims: int, batch: int, groups: int, steps: int,
            image_size: int, repeats: int, width: int = 16) -> list[dict]:
    shape = (image_size, image_size, 3)
    model = build(model_name, width)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (victims, batch, *shape))
    y = (jnp.arange(victims * batch, dtype=jnp.int32) % 10).reshape(victims, batch)
    updates = jax.jit(jax.vmap(lambda a, b: client_update(model, params, a, b)))(x, y)
    # Throughput does not depend on the statistics' values: PyTorch's initial ones.
    running = resnet_bn.init_running_stats(model, params, shape)
    config = gi.GradInversionConfig(max_iters=10 ** 6, num_groups=groups)
    problem = gi.problem(model, shape, batch, config)
    victims_tree = {"target": updates, "labels": y}
    context = {"params": params, "running": running, "bounds": None}
    state = runner.init_state(problem, victims_tree, context, jax.random.key(2))
    chunk = jax.jit(runner.make_chunk(problem, config.stopping(), steps, victim_tile=None))
    pick = [jax.tree.map(lambda a, i=i: a[i:i + 1], (state, victims_tree))
            for i in range(victims)]

    def run_vmap():
        jax.block_until_ready(chunk(state, victims_tree, context))

    def run_loop():
        for s, v in pick:
            jax.block_until_ready(chunk(s, v, context))

    timings = side_by_side({"jgi-vmap": run_vmap, "jgi-loop": run_loop}, repeats, {})
    return [{"impl": name, "model": model_name, "victims": victims, "batch": batch,
             "groups": groups, "steps": steps, "image_size": image_size,
             "victim_steps_per_s": victims * steps / t.seconds, "seconds": t.seconds,
             "first_call_s": t.first_call_s, "cpu_count": os.cpu_count(),
             "backend": jax.default_backend()} for name, t in timings.items()]


def table(rows: list[dict]) -> str:
    lines = ["| impl | model | victims | batch | groups | steps | victim-steps/s | "
             "first call s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['impl']} | {r['model']} | {r['victims']} | {r['batch']} | "
              f"{r['groups']} | {r['steps']} | {r['victim_steps_per_s']:.2f} | "
              f"{r['first_call_s']:.1f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bn_cnn", choices=("bn_cnn", "resnet18_bn"))
    p.add_argument("--width", type=int, default=16, help="bn_cnn's first width")
    p.add_argument("--victims", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="JSON lines only")
    args = p.parse_args(argv)
    if min(args.victims, args.batch, args.groups, args.steps, args.image_size,
           args.repeats, args.width) < 1:
        p.error("victims, batch, groups, steps, image size, repeats and width must be >= 1")
    rows = measure(args.model, args.victims, args.batch, args.groups, args.steps,
                   args.image_size, args.repeats, args.width)
    if not args.json:
        print(table(rows) + "\n")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
