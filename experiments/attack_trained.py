"""Attack a model that has already trained for a while, not the freshly initialised one.

    python -m experiments.attack_trained --steps=300 --defenses="dp;cvb;dp,cvb"
    python -m experiments.attack_trained --steps=0,30,300 --defenses=dp,cvb --victims=8

The ablation (like the core paper, section 5) attacks updates computed on the randomly
initialised model. This asks how that changes once the model has trained: for each
number of steps, the victim client (the ablation's split, victims and initialisation
for the same seed) takes that many local steps on its own training share (Adam lr
1e-3, batch 64, every defense of the stack applied as in FedAvg's local training:
fresh dropout masks and bottleneck noise per step, DP-SGD per batch, pruning), then its
victims' batch-size-1 updates on the trained parameters are attacked. One line per
(steps, stack): the update norm without DP, the norm of what DP changed, SSIM and ASR.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi import data, defenses, fl, metrics, models, pipeline
from jgi.attacks import ATTACKS, ig, mimic
from jgi.defenses import dp as dp_lib

BATCH = 64


def train(model: models.Model, params, stack: defenses.DefenseStack, x: jax.Array,
          y: jax.Array, steps: int, key: jax.Array, input_shape: tuple[int, ...]):
    """``steps`` local Adam steps (lr 1e-3, batch 64) with the stack's defenses applied."""
    opt = optax.adam(1e-3)

    @jax.jit
    def step(carry, i):
        p, state = carry
        k_batch, k_rand = jax.random.split(jax.random.fold_in(key, i))
        idx = jax.random.choice(k_batch, len(y), (BATCH,), replace=False)
        randomness = fl.client.sample_randomness(k_rand, model, p, stack, input_shape, BATCH)
        update = fl.client_update(model, p, x[idx], y[idx], randomness, stack)
        delta, state = opt.update(update, state, p)
        return (optax.apply_updates(p, delta), state), None

    carry = (params, opt.init(params))
    for i in range(steps):  # one compiled step; a Python loop keeps memory flat
        carry, _ = step(carry, jnp.asarray(i))
    return carry[0]


def run_one(config: pipeline.AblationConfig, dataset: data.Dataset, names, steps: int,
            attack: str) -> dict:
    """Trains ``steps`` steps under the stack, attacks the victims, returns the figures."""
    info = dataset.info
    stack = config.stack(names)
    model = models.get(config.model, **dict(config.model_options), **stack.model_options())
    victims = pipeline.victim_set(config, dataset)
    keys = victims.keys
    params = model.init(keys.model, info.image_shape)
    params = train(model, params, stack, victims.pool_x, victims.pool_y, steps,
                   keys.fedavg, info.image_shape)
    randomness = fl.sample_victim_randomness(keys.client, model, params, stack,
                                             info.image_shape, config.victims)
    updates = jax.jit(lambda p, r: fl.victim_updates(model, p, victims.x, victims.y, r,
                                                     stack))(params, randomness)
    without_dp = dataclasses.replace(stack, dp=None)
    clean = jax.jit(lambda p, r: fl.victim_updates(model, p, victims.x, victims.y, r.model,
                                                   without_dp))(params, randomness)
    dp_change = jax.tree.map(lambda a, b: a - b, updates, clean)
    result = mimic.reconstruct(
        model, params, updates, victims.y, keys.attack, stack, ATTACKS[attack](stack),
        config.ig, input_shape=info.image_shape, bounds=data.input_bounds(info),
        client_noise=randomness.model, client_dp_noise=randomness.dp,
        progress=config.progress and f"{attack} {'+'.join(stack.names) or 'none'}")
    recon = np.clip(data.denormalize(result.best["x"], info), 0.0, 1.0)
    summary = metrics.summarize(victims.originals, recon)
    return {"steps": steps, "stack": "+".join(stack.names) or "none",
            "update_norm": float(np.median(dp_lib.global_norms(clean))),
            "dp_change_norm": float(np.median(dp_lib.global_norms(dp_change))),
            "ssim": summary["ssim_mean"], "asr": summary["asr"],
            "iterations": float(np.mean(result.iterations)),
            "seconds": result.wall_seconds}


def parse_steps(spec: str) -> list[int]:
    try:
        steps = [int(s) for s in spec.split(",")]
    except ValueError:
        steps = [-1]
    if not steps or min(steps) < 0:
        raise ValueError(f"--steps takes non-negative integers separated by commas, e.g. "
                         f"'0,30,300'; got {spec!r}.")
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="0,300",
                        help="local training steps before the attack, e.g. '0,30,300'")
    parser.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--defenses", default="dp;cvb;dp,cvb",
                        help="stacks separated by ';' (as in experiments.ablation)")
    parser.add_argument("--attack", default="cdia", choices=sorted(ATTACKS))
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--max-iters", type=int, default=3000)
    parser.add_argument("--dp-sigma", type=float,
                        default=defenses.stack.PAPER_DP.noise_multiplier)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.victims < 1 or args.max_iters < 1:
        parser.error(f"need --victims >= 1 and --max-iters >= 1, got {args.victims} and "
                     f"{args.max_iters}")
    try:
        steps = parse_steps(args.steps)
        config = pipeline.AblationConfig(
            model=args.model, dataset=args.dataset, stacks=pipeline.parse_stacks(args.defenses),
            victims=args.victims, seed=args.seed, attack=args.attack,
            dp=defenses.DPConfig(clip_norm=defenses.stack.PAPER_DP.clip_norm,
                                 noise_multiplier=args.dp_sigma),
            ig=ig.IGConfig(max_iters=args.max_iters), data_dir=args.data_dir,
            data_source=args.data_source, progress=not args.no_progress)
        dataset = data.load(config.dataset, data_dir=config.data_dir, source=config.data_source)
    except (ValueError, data.DataError) as e:
        print(f"error: {e}")
        return 2
    print(f"{args.attack.upper()} on {args.victims} {dataset.info.name} victims, "
          f"{args.model}, up to {args.max_iters} iterations, seed {args.seed}\n")
    print("| steps | stack | update norm (no DP) | DP's change | SSIM | ASR | iterations | s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in steps:
        for names in config.stacks:
            t0 = time.time()
            r = run_one(config, dataset, names, n, args.attack)
            print(f"| {r['steps']} | {r['stack']} | {r['update_norm']:.3g} | "
                  f"{r['dp_change_norm']:.3g} | {r['ssim']:.2f} | {100 * r['asr']:.1f}% | "
                  f"{r['iterations']:.0f} | {time.time() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
