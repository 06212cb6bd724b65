"""GGL against defended updates: the defense reapplied to the trial gradients, or not, and IG.

    JGI_DATA_DIR=/work/shared/data python -m experiments.ggl_defenses --victims=4 \
        --defenses=none,dp:1e-4,dp:1e-3,dp:1e-2,prune:0.5,prune:0.9,dropout,precode \
        --population=20 --generations=50 --ig-iters=200 --workdir=runs/ggl_defenses

Li et al., "Auditing privacy defenses in federated learning via generative gradient
leakage" (CVPR 2022; GGL) attack a *degraded* gradient ``T(F(x))`` by searching the
generator's latent with the defense ``T`` applied to the trial gradients too (their
adaptive attack: the server knows the defense, as it knows the model). This script
measures that on jgi's defenses, single images (each victim one MNIST test image's
one-step update, batch 1 as GGL's experiments), the MLP (784-256-10, the generator's
domain: the shipped MNIST generator):

- ``ggl-reapply``: :func:`jgi.attacks.ggl.reconstruct` with
  ``GGLConfig(reapply_defense=True)`` and the client's stack;
- ``ggl``: the same search with the trial gradients left undefended;
- ``ig``: :mod:`jgi.attacks.ig` on the same update (it knows the model, so dropout and
  PRECODE are in its forward pass, but it does not reapply DP or pruning).

Defenses (``--defenses``, comma list): ``none``; ``dp:SIGMA[:CLIP]`` (DP-SGD with clip
norm CLIP, default ``--dp-clip`` = 20 as the core paper, and noise multiplier SIGMA: the
noise's standard deviation is CLIP x SIGMA per entry, against an RMS gradient entry of
~0.02-0.03 for this MLP at its initialisation and an update norm of 8-14: a clip of 20
never binds, a clip of 1 always does);
``prune:FRACTION`` (each layer's smallest entries zeroed); ``dropout`` (rate 0.25, the
core paper's); ``precode`` (PRECODE's bottleneck; the MLP has no feature map for CVB).

What reapplying changes in jgi (:func:`jgi.attacks.ggl.make_loss`): DP's clipping (and
the averaging) are applied to the trial gradient and its noise replaced by its mean
(zeros); pruning keeps the trial gradient's own largest entries. Dropout masks and
PRECODE's eps are drawn fresh per evaluation *either way* (they are part of the
model's forward pass, which GGL runs as the client does), so for ``dropout`` and
``precode`` the two GGL rows differ only by their random draws: one is run, and the
table repeats it (``same search``).

Metric: SSIM / PSNR of each victim's reconstruction against its image (in [0, 1]),
mean over victims; ``label_acc``: iDLG's guess (GGL's) right. Rows go to
``<workdir>/results.jsonl`` keyed by everything that determines them (a rerun skips
rows already there; :class:`jgi.results.KeyedRows`); the table to
``<workdir>/table.md``, grids to ``<workdir>/grids``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.generative import save_grid, write_table
from jgi import data, defenses, fl, metrics, models, results
from jgi.attacks import ggl, ig
from jgi.attacks.labels import idlg_labels
from jgi.models import generator as gen

ATTACKS = ("ggl-reapply", "ggl", "ig")


def parse_defense(text: str, dp_clip: float) -> defenses.DefenseStack:
    """``none``, ``dp:SIGMA``, ``prune:FRACTION``, ``dropout``, ``precode`` -> a stack."""
    name, _, value = text.strip().lower().partition(":")
    try:
        if name == "none" and not value:
            return defenses.NO_DEFENSE
        if name == "dp":
            sigma, _, clip = value.partition(":")
            return defenses.DefenseStack(dp=defenses.DPConfig(
                clip_norm=float(clip) if clip else dp_clip, noise_multiplier=float(sigma)))
        if name == "prune":
            return defenses.DefenseStack(prune=float(value))
        if name == "dropout":
            return defenses.DefenseStack(dropout=float(value) if value else 0.25)
        if name in ("precode", "cvb") and not value:
            return defenses.DefenseStack(bottleneck=name)
    except ValueError as e:
        raise ValueError(f"--defenses item {text!r}: {e}") from e
    raise ValueError(f"--defenses item {text!r} is not one of none, dp:SIGMA[:CLIP], "
                     "prune:FRACTION, dropout[:RATE], precode (e.g. dp:1e-3, dp:1e-3:1, "
                     "prune:0.9).")


def gradient_level(stack: defenses.DefenseStack) -> bool:
    """Whether reapplying the stack changes GGL's objective (DP or pruning in it)."""
    return stack.dp is not None or stack.prune > 0


def run_attack(name, args, model, params, updates, stack, info, key, generator):
    """``(images (V, H, W, C) in [0, 1], labels (V,))``."""
    labels = idlg_labels(updates, model.classifier)
    stats = (np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32))
    if name.startswith("ggl"):
        config = ggl.GGLConfig(population=args.population, generations=args.generations,
                               chunk=min(args.generations, 25),
                               reapply_defense=name == "ggl-reapply")
        r = ggl.reconstruct(model, params, updates, key, config, generator=generator,
                            labels=labels, stack=stack, input_stats=stats, progress=name)
        return np.asarray(r.images[:, 0]), np.asarray(labels)
    config = ig.IGConfig(max_iters=args.ig_iters, stop_patience=args.ig_iters,
                         chunk_size=min(100, args.ig_iters))
    r = ig.reconstruct(model, params, updates, labels, key, config,
                       input_shape=info.image_shape, bounds=data.input_bounds(info),
                       progress="ig")
    x = np.asarray(data.denormalize(np.asarray(r.best["x"]), info))
    return np.clip(x, 0, 1), np.asarray(labels)


def table(rows: list[dict], defense_names: Sequence[str]) -> str:
    lines = ["| defense | GGL, defense reapplied | GGL, not reapplied | IG |",
             "|---|---:|---:|---:|"]
    for d in defense_names:
        cells = []
        for a in ATTACKS:
            hit = [r for r in rows if r["defense"] == d and r["attack"] == a]
            if not hit and a == "ggl-reapply":
                hit = [r for r in rows if r["defense"] == d and r["attack"] == "ggl"]
                cells.append(f"{hit[-1]['ssim']:.3f} / {hit[-1]['psnr']:.1f} (same search)"
                             if hit else "-")
                continue
            cells.append(f"{hit[-1]['ssim']:.3f} / {hit[-1]['psnr']:.1f}" if hit else "-")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\ncells: mean SSIM / PSNR (dB) over victims\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--defenses",
                   default="none,dp:1e-4,dp:1e-3,dp:1e-2,prune:0.5,prune:0.9,dropout,precode")
    p.add_argument("--attack", default=",".join(ATTACKS))
    p.add_argument("--dp-clip", type=float, default=20.0)
    p.add_argument("--victims", type=int, default=4)
    p.add_argument("--generator", default="mnist", help="shipped name or path")
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--generations", type=int, default=500)
    p.add_argument("--ig-iters", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--workdir", default="runs/ggl_defenses")
    args = p.parse_args(argv)
    attacks = [a for a in args.attack.split(",") if a]
    for a in attacks:
        if a not in ATTACKS:
            p.error(f"unknown attack {a!r}; valid: {', '.join(ATTACKS)}")
    names = [d.strip().lower() for d in args.defenses.split(",") if d.strip()]
    try:
        stacks = {d: parse_defense(d, args.dp_clip) for d in names}
    except ValueError as e:
        p.error(str(e))
    workdir = Path(args.workdir)
    out = workdir / "results.jsonl"
    ds = data.load("mnist", data_dir=args.data_dir)
    info = ds.info
    rng = np.random.default_rng([args.seed, 1])  # experiments.generative's 1x1x1 victims
    idx = rng.choice(len(ds.x_test), args.victims, replace=False)
    x01 = np.asarray(ds.x_test[idx], np.float32).reshape(args.victims, *info.image_shape)
    y = jnp.asarray(ds.y_test[idx], jnp.int32)
    generator = gen.load_generator(args.generator)
    store = results.KeyedRows(out)
    for d, stack in stacks.items():
        model = models.get("mlp", **stack.model_options())
        params = model.init(jax.random.key(args.seed), info.image_shape)
        updates = None
        for attack in attacks:
            if attack == "ggl-reapply" and not gradient_level(stack):
                continue  # the same search as "ggl" (see the module docstring)
            identity = {"experiment": "ggl_defenses", "attack": attack, "defense": d,
                        "stack": stack.describe(), "dataset": "mnist", "model": "mlp",
                        "victims": args.victims, "seed": args.seed,
                        "generator": None if attack == "ig" else args.generator,
                        "budget": args.ig_iters if attack == "ig"
                        else [args.population, args.generations]}
            if store.done(identity):
                continue
            if updates is None:
                xn = jnp.asarray(data.normalize(x01, info))
                randomness = fl.sample_victim_randomness(
                    jax.random.key(args.seed + 1), model, params, stack, info.image_shape,
                    args.victims)
                updates = fl.victim_updates(model, params, xn, y, randomness, stack)
            t0 = time.time()
            recon, labels = run_attack(attack, args, model, params, updates, stack, info,
                                       jax.random.key(args.seed + 2), generator)
            s, ps = metrics.ssim(x01, recon), metrics.psnr(x01, recon)
            row = {**identity, "ssim": float(np.mean(s)),
                   "psnr": float(np.mean(ps)),
                   "ssim_per_victim": [round(float(a), 4) for a in s],
                   "label_acc": float(np.mean(labels == np.asarray(y))),
                   "seconds": round(time.time() - t0, 1)}
            store.add(identity, row)
            save_grid(workdir, f"{attack}_{d.replace(':', '')}", x01, recon,
                      row["ssim_per_victim"], f"{attack}, {d}: SSIM {row['ssim']:.3f}")
            print(f"{attack} {d}: SSIM {row['ssim']:.3f} PSNR {row['psnr']:.1f} label acc "
                  f"{row['label_acc']:.2f} ({row['seconds']} s)", file=sys.stderr)
    rows = [r for r in store.rows() if r.get("experiment") == "ggl_defenses"
            and r["victims"] == args.victims and r["seed"] == args.seed]
    write_table(workdir, table(rows, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
