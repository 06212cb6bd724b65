"""The core paper's DP rows under each candidate explanation (issue 16): candidate x stack.

    python -m experiments.dp_candidates                      # 8 victims, 3,000 iterations
    python -m experiments.dp_candidates --candidates=none,fresh-dp --stacks="dp;dp,cvb"
    python -m experiments.dp_candidates --max-iters=1000 --out=runs/dpcand_1k

Scheliga et al., "Combining stochastic defenses ...", Table 4 (CNN/MNIST, CDIA): DP
0.93 / 100%, DP + GP 0.95 / 100%, DO + DP 0.56 / 69.53%, DP + CVB 0.14 / 0%,
DP + PRECODE 0.49 / 50.78% (SSIM / ASR). jgi's CDIA keeps every one of them broken.
Each candidate of :data:`jgi.attacks.authors.CANDIDATES` (``none`` = jgi's CDIA) is run
on the same victims as the ablation (its victim set for the seed: client 0 of 10 IID
clients, the paper's defense settings), one row per (candidate, stack). Rows land in
``<out>/results.jsonl`` keyed by their identity (candidate settings, model, stack,
knowledge, attack config, victims, data), so a rerun reuses every finished row and an
interrupted attack resumes from its checkpoint; ``<out>/table.md`` holds the table
next to the paper's row. Run it under ``nice -n 10`` on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, fl, metrics, models, pipeline, results
from jgi.attacks import STOP_REASONS, authors, mimic
from jgi.attacks.ig import IGConfig
from jgi.checkpointing import AttackCheckpoint
from jgi.pipeline import rows as row_builders

# The stacks of the DP rows, with the paper's Table 4 (CNN/MNIST, CDIA) SSIM and ASR [%].
STACKS: dict[str, tuple[tuple[str, ...], float, float]] = {
    "DP + CVB": (("dp", "cvb"), 0.14, 0.0),
    "DO + DP": (("dropout", "dp"), 0.56, 69.53),
    "DP": (("dp",), 0.93, 100.0),
    "DP + PRECODE": (("dp", "precode"), 0.49, 50.78),
    "DP + GP": (("dp", "prune"), 0.95, 100.0),
    # References without DP (not run by default): is a drop DP's doing?
    "CVB": (("cvb",), 0.88, 99.22),
    "DO": (("dropout",), 0.97, 100.0),
}
DEFAULT_STACKS = ("DP + CVB", "DO + DP", "DP", "DP + PRECODE", "DP + GP")
DEFAULT_CANDIDATES = ("none", "fresh-dp", "dp-estimate", "tv-0.1", "authors-cvb-kl",
                      "est-lr-0.1", "est-sign", "dia-patience-800", "authors-layout")


def say(msg: str) -> None:
    print(msg, flush=True)


def _config(args, candidate: authors.Candidate) -> pipeline.AblationConfig:
    """The ablation's settings for the candidate's layout (candidate 6: "authors")."""
    return pipeline.AblationConfig(
        model="cnn", dataset="mnist", victims=args.victims, seed=args.seed,
        ig=IGConfig(max_iters=args.max_iters, chunk_size=args.chunk_size),
        preset="dp_candidates", data_dir=args.data_dir, data_source=args.data_source,
        progress=not args.no_progress, layout=candidate.layout)


def effective(knowledge: mimic.Knowledge) -> mimic.Knowledge:
    """``knowledge`` with the estimate options reset where nothing is estimated (they
    change nothing there), so that equal computations get equal row identities."""
    if mimic.estimators(knowledge):
        return knowledge
    return dataclasses.replace(knowledge, estimate_lr_scale=1.0, signed_estimates=False)


def identity(config: pipeline.AblationConfig, dataset: data.Dataset,
             candidate: authors.Candidate, label: str) -> tuple[dict, Any, Any, Any, Any]:
    """The row's identity (every setting that changes its result, not the candidate's
    name) and what it is computed with: (identity, model, stack, knowledge, config)."""
    names = STACKS[label][0]
    stack = config.stack(names)
    info = row_builders.layout_info(config, dataset)
    model = candidate.model(models.get(config.model, num_classes=info.num_classes,
                                       **dict(config.model_options), **stack.model_options()))
    knowledge = effective(candidate.knowledge(stack))
    cfg = candidate.ig_config(config.ig, stack)
    knowledge.check(model, stack)
    # A candidate that changes nothing on a stack (DP noise estimation on DP alone,
    # patience 800 without dropout) has the identity of jgi's CDIA there, so it reuses
    # that row.
    ident = {
        "experiment": "dp_candidates", "model": model.describe(),
        "dataset": config.dataset, "defenses": stack.describe(),
        "knowledge": dataclasses.asdict(knowledge), "attack_config": dataclasses.asdict(cfg),
        "seed": config.seed, "victims": config.victims, "num_clients": config.num_clients,
        "val_fraction": config.val_fraction, "victim_client": config.victim_client,
        "data": {"source": dataset.source, "n_train": int(len(dataset.y_train)),
                 "shape": list(info.image_shape)},
    }
    if config.layout != "jgi":
        ident["layout"] = config.layout
    return ident, model, stack, knowledge, cfg


def row(config: pipeline.AblationConfig, dataset: data.Dataset,
        candidate: authors.Candidate, label: str, store: results.KeyedRows,
        compute: bool = True) -> dict | None:
    """One (candidate, stack) row, reused from ``store`` (``<out>/results.jsonl``) when
    a row with the same identity is there (None when it is not and ``compute`` is
    False)."""
    ident, model, stack, knowledge, cfg = identity(config, dataset, candidate, label)
    info = row_builders.layout_info(config, dataset)
    workdir = store.path.parent
    rid = results.row_id(ident)
    if store.done(ident):
        existing = [r for r in store.rows() if r.get("row_id") == rid]
        say(f"{candidate.name} x {label}: row {rid} already in {store.path.name} (first "
            f"made for {existing[-1]['candidate']}); reusing it.")
        return {**existing[-1], "candidate": candidate.name, "number": candidate.number,
                "stack": label}
    if not compute:
        return None
    say(f"{candidate.name} x {label}: CDIA ({candidate.summary}), {config.victims} victims, "
        f"up to {cfg.max_iters} iterations, knowledge {dataclasses.asdict(knowledge)}")
    victims = row_builders.victim_set(config, dataset)
    keys = victims.keys
    params = model.init(keys.model, info.image_shape)
    randomness = fl.sample_victim_randomness(keys.client, model, params, stack,
                                             info.image_shape, config.victims)
    observation, labels = jax.jit(lambda p, xs, ys, r: fl.observe_victims(
        model, p, xs, ys, r, stack))(params, victims.x, victims.y, randomness)
    checkpoint = AttackCheckpoint(workdir / "checkpoints" / rid, config.checkpoint_seconds)
    result = mimic.reconstruct_observation(
        model, observation, labels, keys.attack, stack, knowledge, cfg,
        input_shape=info.image_shape, bounds=data.input_bounds(info),
        client_noise=randomness.model, client_dp_noise=randomness.dp,
        progress=f"{candidate.name} {'+'.join(stack.names)}" if config.progress else False,
        checkpoint=checkpoint)
    recon = np.clip(data.denormalize(result.best["x"], info), 0.0, 1.0)
    summary = metrics.summarize(victims.originals, recon, info.mean, info.std)
    recon_dir = workdir / "reconstructions"
    recon_dir.mkdir(exist_ok=True)
    np.savez_compressed(recon_dir / f"{rid}.npz", originals=victims.originals,
                        reconstructions=recon, ssim=np.asarray(summary["per_victim_ssim"]))
    # Candidate 7's question: did a victim's attack leave its start? The SSIM of the
    # box-clipped initial image (the runner's draw for that victim: split the attack key
    # per victim, the first half of that split) is the chance level.
    lower, upper = data.input_bounds(info)
    start_x = jax.vmap(lambda k: cfg.init_std * jax.random.normal(
        jax.random.split(k)[0], info.image_shape, jnp.float32))(
            jax.random.split(keys.attack, config.victims))
    start_x = np.clip(data.denormalize(jnp.clip(start_x, lower, upper), info), 0.0, 1.0)
    start_ssim = metrics.ssim(victims.originals, start_x)
    out = {
        "candidate": candidate.name, "number": candidate.number,
        "stack": label, "defenses": list(stack.names),
        **{k: summary[k] for k in ("ssim_mean", "ssim_std", "psnr_mean", "mse_mean", "asr",
                                   "per_victim_ssim", "ssim_authors_mean", "asr_authors",
                                   "per_victim_ssim_authors")},
        "start_ssim_mean": float(np.mean(start_ssim)),
        "iterations": [int(i) for i in result.iterations],
        "stop_reasons": {n: int(np.sum(result.stop_reason == i))
                         for i, n in enumerate(STOP_REASONS) if np.any(result.stop_reason == i)},
        "best_loss": [float(v) for v in result.best_loss],
        "finite_loss": bool(np.all(np.isfinite(result.best_loss))),
        "wall_seconds": result.wall_seconds, "device": row_builders.device_description(),
        "config": ident,
    }
    out = store.add(ident, out)
    checkpoint.clear()
    say(f"        SSIM {out['ssim_mean']:.3f} (± {out['ssim_std']:.3f}), ASR "
        f"{100 * out['asr']:.1f}%; authors' SSIM {out['ssim_authors_mean']:.3f}, ASR "
        f"{100 * out['asr_authors']:.1f}%; start SSIM {out['start_ssim_mean']:.3f}, "
        f"{out['wall_seconds']:.0f} s")
    return out


def markdown(rows: Sequence[dict], candidates: Sequence[str], stacks: Sequence[str],
             ssim: str = "ssim_mean", asr: str = "asr") -> str:
    """candidate x stack -> "SSIM / ASR%", the paper's row first (``ssim``/``asr``: the
    row fields, jgi's SSIM or the authors' ``ssim_authors_mean``/``asr_authors``)."""
    header = ["Candidate", "#"] + list(stacks)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             "| **paper (Table 4, CDIA)** | | " + " | ".join(
                 f"{STACKS[s][1]:.2f} / {STACKS[s][2]:.1f}%" for s in stacks) + " |"]
    by_key = {(r["candidate"], r["stack"]): r for r in rows}
    for name in candidates:
        cells = []
        for s in stacks:
            r = by_key.get((name, s))
            cells.append("–" if r is None or ssim not in r
                         else f"{r[ssim]:.2f} / {100 * r[asr]:.1f}%")
        c = authors.get(name)
        lines.append(f"| `{name}` ({c.summary}) | {c.number} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.dp_candidates",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                        help=f"comma list of {', '.join(authors.CANDIDATES)}")
    parser.add_argument("--stacks", default=";".join(DEFAULT_STACKS),
                        help=f"';' list of {'; '.join(STACKS)}")
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--max-iters", type=int, default=3000)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--table-only", action="store_true",
                        help="only print the table of the rows already in --out")
    parser.add_argument("--out", default="runs/dp_candidates")
    args = parser.parse_args(argv)
    try:
        candidates = [authors.get(n.strip()).name for n in args.candidates.split(",")
                      if n.strip()]
        stacks = [s.strip() for s in args.stacks.split(";") if s.strip()]
        unknown = [s for s in stacks if s not in STACKS]
        if unknown:
            raise ValueError(f"Unknown stack(s) {unknown}; valid: {'; '.join(STACKS)}.")
    except ValueError as e:
        print(f"error: {e}", flush=True)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done: list[dict] = []
    try:
        lock = contextlib.nullcontext() if args.table_only else results.lock_workdir(out)
        with results.sigterm_as_interrupt(), lock:
            datasets: dict[str, data.Dataset] = {}
            store = results.KeyedRows(out / "results.jsonl")
            # Stack by stack, in the order given (the collapsed rows first, by default),
            # every candidate on one stack before the next stack.
            for label in stacks:
                for name in candidates:
                    candidate = authors.get(name)
                    config = _config(args, candidate)
                    if config.dataset not in datasets:
                        datasets[config.dataset] = data.load(
                            config.dataset, data_dir=config.data_dir,
                            source=config.data_source)
                    r = row(config, datasets[config.dataset], candidate, label, store,
                            compute=not args.table_only)
                    if r is not None:
                        done.append(r)
    except (ValueError, results.FolderBusyError) as e:
        print(f"error: {e}", flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished rows are in {out / 'results.jsonl'}. Rerun the same "
              "command to resume.", flush=True)
        return 130
    all_rows = done
    text = (f"# DP rows x candidate explanations (CNN/MNIST, CDIA)\n\n"
            f"{args.victims} victims, seed {args.seed}, up to {args.max_iters} iterations; "
            "cells are SSIM / ASR. The paper ran 128 victims and up to 20,000 iterations.\n\n"
            + markdown(all_rows, candidates, stacks)
            + "\nThe same rows with the authors' SSIM (per-image min-max scaling) and its "
              "ASR:\n\n" + markdown(all_rows, candidates, stacks, "ssim_authors_mean",
                                    "asr_authors"))
    if not args.table_only:
        results.write_text(out / "table.md", text)
    say(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
