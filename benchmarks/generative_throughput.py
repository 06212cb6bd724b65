"""Throughput of GGL's CMA-ES generation: vmapped over victims vs one victim at a time.

    python benchmarks/generative_throughput.py                 # table, then JSON lines
    python benchmarks/generative_throughput.py --victims=8 --population=50 --generations=5

One GGL generation per victim is a CMA-ES ``ask`` (``--population`` latents), the
generator on each latent, the model's gradient of each generated image under the guessed
label and its distance to the victim's update, and ``tell``
(:func:`jgi.attacks.ggl.make_search`). A victim-evaluation is one candidate's loss; GGL
spends 25,000 per victim.

Implementations (same states, keys and work in every repeat):

- ``jgi-vmap``: the compiled chunk (``--generations`` generations in a ``lax.scan``)
  vmapped over all ``--victims``;
- ``jgi-loop``: the same chunk compiled for one victim, called once per victim.

Model: ``--model`` (default the MLP) at its random initialisation, MNIST-shaped random
victims, the generator ``spec_for("mnist")`` at its random initialisation (speed does
not depend on training). ``first call s`` is compilation plus one call; the median of
``--repeats`` timed calls is reported, interleaved (:mod:`timing`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jgi import fl, models  # noqa: E402
from jgi.attacks import ggl  # noqa: E402
from jgi.models import generator as gen  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import side_by_side  # noqa: E402  (benchmarks/timing.py)


def measure(victims: int, population: int, generations: int, repeats: int, model_name: str,
            width: int, latent_dim: int) -> list[dict]:
    spec = gen.spec_for("mnist", width=width, latent_dim=latent_dim)
    g_params = gen.generator(spec)[0](jax.random.key(0))
    model = models.get(model_name)
    params = model.init(jax.random.key(1), spec.image_shape)
    x = jax.random.uniform(jax.random.key(2), (victims, *spec.image_shape))
    y = jnp.arange(victims) % 10
    updates = jax.jit(lambda p, x, y: fl.victim_updates(model, p, x, y))(params, x, y)
    config = ggl.GGLConfig(population=population, generations=generations)
    init, run_chunk = ggl.make_search(model, spec, config)
    states = init(jax.random.split(jax.random.key(3), victims))
    keys = jax.random.split(jax.random.key(4), victims)

    def one(i):
        return jax.tree.map(lambda a: a[i:i + 1], (states, keys, updates, y))

    singles = [one(i) for i in range(victims)]

    def run_vmap():
        out = run_chunk(states, keys, updates, y, g_params, params, generations)
        return jax.block_until_ready(out.best_fitness)

    def run_loop():
        out = [run_chunk(s, k, u, yy, g_params, params, generations).best_fitness
               for s, k, u, yy in singles]
        return jax.block_until_ready(out)

    timing = side_by_side({"jgi-vmap": run_vmap, "jgi-loop": run_loop}, repeats)
    evals = victims * population * generations
    return [{"impl": name, "victims": victims, "population": population,
             "generations": generations, "model": model_name, "generator_width": width,
             "first_call_s": round(t.first_call_s, 3), "seconds": round(t.seconds, 4),
             "victim_evals_per_s": round(evals / t.seconds, 1),
             "victim_generations_per_s": round(victims * generations / t.seconds, 2)}
            for name, t in timing.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--victims", type=int, default=8)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="mlp")
    p.add_argument("--width", type=int, default=16, help="generator width")
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--json", action="store_true", help="JSON lines only")
    args = p.parse_args(argv)
    rows = measure(args.victims, args.population, args.generations, args.repeats,
                   args.model, args.width, args.latent_dim)
    if not args.json:
        print(f"{'impl':10s} {'first call s':>12s} {'s/call':>8s} {'victim-evals/s':>15s}")
        for r in rows:
            print(f"{r['impl']:10s} {r['first_call_s']:12.2f} {r['seconds']:8.3f} "
                  f"{r['victim_evals_per_s']:15.1f}")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
