"""Time per victim of the analytic and malicious-server attacks, vmapped and looped.

    python benchmarks/analytic_throughput.py                 # table, then JSON lines
    python benchmarks/analytic_throughput.py --json --victims=8
    python benchmarks/analytic_throughput.py --attacks=rtf,cpa --cpa-iters=200

For every attack, the same V victims' updates (random MNIST-shaped images through the
model) are inverted by one jitted ``vmap`` over the victims (``vmap``) and by the
jitted single-victim function called once per victim from Python (``loop``). Both are
compiled before timing; the median over ``--repeats`` is reported as seconds per
victim, with the compile time of each.

Attacks: ``analytic`` (:func:`jgi.attacks.analytic.recover_image`, MLP, batch 1),
``rtf`` (:func:`jgi.attacks.rtf.recover`, imprint+MLP with 100 bins, batch 8 per
victim), ``cpa`` (``--cpa-iters`` Adam steps of :mod:`jgi.attacks.cpa`'s objective on a
batch of 4 through the MLP; the iterative one), ``rgap`` (:func:`jgi.attacks.rgap.recover`
on CNN6 at ``--rgap-size`` pixels).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from jgi import fl, models
from jgi.attacks import analytic, cpa, rgap, rtf
from jgi.models import imprint

ATTACKS = ("analytic", "rtf", "cpa", "rgap")
SHAPE = (28, 28, 1)


def _case(name: str, victims: int, args):
    """``(one, batched_inputs)``: the single-victim function and its inputs, leading V."""
    key = jax.random.key(0)
    if name == "analytic":
        model = models.get("mlp")
        params = model.init(key, SHAPE)
        x = jax.random.normal(key, (victims, 1, *SHAPE))
        y = jnp.zeros((victims, 1), jnp.int32)
        ups = jax.jit(jax.vmap(lambda a, b: fl.client_update(model, params, a, b)))(x, y)
        return (lambda u: analytic.recover_image(model, u, SHAPE)), (ups,)
    if name == "rtf":
        model = imprint.imprint_model(models.get("mlp"), 100, gain=1.0)
        params = model.init(key, SHAPE)
        x = jax.random.normal(key, (victims, 8, *SHAPE))
        y = jnp.zeros((victims, 8), jnp.int32)
        ups = jax.jit(jax.vmap(lambda a, b: fl.client_update(model, params, a, b)))(x, y)
        return (lambda u: rtf.recover(u, SHAPE).images), (ups,)
    if name == "cpa":
        model = models.get("mlp")
        params = model.init(key, SHAPE)
        x = jax.random.normal(key, (victims, 4, *SHAPE))
        y = jnp.zeros((victims, 4), jnp.int32)
        ups = jax.jit(jax.vmap(lambda a, b: fl.client_update(model, params, a, b)))(x, y)
        z = jax.vmap(lambda u: cpa.whiten(cpa.mixtures(u), 4))(ups)
        problem = cpa.problem(cpa.CPAConfig(iters=args.cpa_iters, lr=5e-2), SHAPE)

        def steps(zv):
            victim = {"z": zv}
            cand = problem.init(None, victim, {})
            grad = jax.grad(lambda c: problem.objective(c, victim, {}, None)[0])

            def body(carry, _):
                c, s = carry
                upd, s = problem.optimizer.update(grad(c), s, c)
                return (problem.project(optax.apply_updates(c, upd), victim, {}), s), None

            (cand, _), _ = jax.lax.scan(body, (cand, problem.optimizer.init(cand)), None,
                                        length=args.cpa_iters)
            return cand["u"]
        return steps, (z,)
    if name == "rgap":
        model = models.get("cnn6")
        shape = (args.rgap_size, args.rgap_size, 3)
        params = model.init(key, shape)
        x = jax.random.uniform(key, (victims, *shape))
        signs = rgap.flipped_signs(model, params, x)
        ups = jax.vmap(lambda a, s: rgap.client_gradient(model, params, a[None], s[None]))(
            x, signs)
        return (lambda u, s: rgap.recover(model, params, u, s, shape).image), (ups, signs)
    raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")


def _timed(fn, *inputs):
    t = time.perf_counter()
    jax.block_until_ready(fn(*inputs))
    return time.perf_counter() - t


def measure(name: str, victims: int, args) -> list[dict]:
    one, inputs = _case(name, victims, args)
    vmapped = jax.jit(jax.vmap(one))
    single = jax.jit(one)

    def loop(*batched):
        return [single(*(jax.tree.map(lambda a, i=i: a[i], b) for b in batched))
                for i in range(victims)]

    records = []
    for impl, fn in (("vmap", vmapped), ("loop", loop)):
        compile_s = _timed(fn, *inputs)  # first call: trace + compile + run
        times = [_timed(fn, *inputs) for _ in range(args.repeats)]
        med = statistics.median(times)
        records.append({"attack": name, "impl": impl, "victims": victims,
                        "seconds_per_victim": med / victims,
                        "first_call_s": compile_s, "repeats": args.repeats,
                        "cpa_iters": args.cpa_iters if name == "cpa" else None,
                        "rgap_size": args.rgap_size if name == "rgap" else None})
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpa-iters", type=int, default=100)
    parser.add_argument("--rgap-size", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="JSON lines only")
    args = parser.parse_args(argv)
    names = [a for a in args.attacks.split(",") if a]
    bad = sorted(set(names) - set(ATTACKS))
    if bad:
        parser.error(f"unknown attack(s) {bad}; valid: {', '.join(ATTACKS)}")
    if args.victims < 1 or args.repeats < 1:
        parser.error("--victims and --repeats must be >= 1")
    records = [r for name in names for r in measure(name, args.victims, args)]
    if not args.json:
        print(f"{jax.devices()[0].platform}, {args.victims} victims, median of "
              f"{args.repeats}\n")
        print("| attack | impl | s / victim | first call (s) |")
        print("|---|---|---|---|")
        for r in records:
            print(f"| {r['attack']} | {r['impl']} | {r['seconds_per_victim']:.3g} | "
                  f"{r['first_call_s']:.3g} |")
        print()
    for r in records:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
