"""The core paper's Tables 1-3: targeted attacks against single defenses, CNN rows.

    python -m experiments.targeted --table=1 --dataset=mnist    # DP: IG, WIIG, DPIA
    python -m experiments.targeted --table=2 --dataset=mnist    # pruning: IG, GPIA
    python -m experiments.targeted --table=3 --dataset=cifar10  # PRECODE/CVB: PIG, WIIG, VBIA
    python -m experiments.targeted --table=2 --preset=smoke     # minutes on a laptop

Scheliga et al., "Combining stochastic defenses ...", section 4. Every row is the
ablation pipeline (``jgi.pipeline.run_rows``) with another (defense, attack)
pair; rows land in ``<out>/results.jsonl`` (shared with the ablation, finished rows
reused) and the table in ``<out>/table<N>.md`` next to the paper's published numbers.
ViT rows come with the ViT model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from jgi import defenses, pipeline, report, results, tables

# (dataset, table, defense label, attack) -> (SSIM mean, SSIM std, ASR %), CNN rows of
# Tables 1-3 of the core paper.
PAPER = {
    ("mnist", 1, "–", "ig"): (0.95, 0.06, 100.0),
    ("mnist", 1, "DP (20, 0.001)", "ig"): (0.64, 0.11, 85.16),
    ("mnist", 1, "DP (20, 0.001)", "wiig"): (0.90, 0.06, 100.0),
    ("mnist", 1, "DP (20, 0.001)", "dpia"): (0.29, 0.13, 5.47),
    ("cifar10", 1, "–", "ig"): (0.87, 0.11, 96.88),
    ("cifar10", 1, "DP (20, 0.001)", "ig"): (0.31, 0.11, 5.47),
    ("cifar10", 1, "DP (20, 0.001)", "wiig"): (0.82, 0.06, 100.0),
    ("cifar10", 1, "DP (20, 0.001)", "dpia"): (0.26, 0.10, 1.56),
    ("mnist", 2, "–", "ig"): (0.95, 0.06, 100.0),
    ("mnist", 2, "GP 0.9", "ig"): (0.63, 0.09, 89.84),
    ("mnist", 2, "GP 0.9", "gpia"): (0.91, 0.07, 100.0),
    ("mnist", 2, "GP 0.95", "ig"): (0.52, 0.08, 64.06),
    ("mnist", 2, "GP 0.95", "gpia"): (0.82, 0.12, 99.22),
    ("mnist", 2, "GP 0.99", "ig"): (0.24, 0.05, 0.0),
    ("mnist", 2, "GP 0.99", "gpia"): (0.50, 0.13, 49.22),
    ("cifar10", 2, "–", "ig"): (0.87, 0.11, 96.88),
    ("cifar10", 2, "GP 0.9", "ig"): (0.48, 0.08, 46.88),
    ("cifar10", 2, "GP 0.9", "gpia"): (0.70, 0.12, 90.62),
    ("cifar10", 2, "GP 0.95", "ig"): (0.32, 0.07, 0.0),
    ("cifar10", 2, "GP 0.95", "gpia"): (0.53, 0.15, 66.41),
    ("cifar10", 2, "GP 0.99", "ig"): (0.15, 0.04, 0.0),
    ("cifar10", 2, "GP 0.99", "gpia"): (0.29, 0.13, 3.91),
    ("mnist", 3, "–", "ig"): (0.95, 0.06, 100.0),
    ("mnist", 3, "PRECODE", "pig"): (0.42, 0.09, 21.09),
    ("mnist", 3, "PRECODE", "wiig"): (0.87, 0.13, 98.44),
    ("mnist", 3, "PRECODE", "vbia"): (0.95, 0.07, 100.0),
    ("mnist", 3, "CVB", "pig"): (0.29, 0.09, 0.78),
    ("mnist", 3, "CVB", "wiig"): (0.95, 0.04, 100.0),
    ("mnist", 3, "CVB", "vbia"): (0.88, 0.09, 99.22),
    ("cifar10", 3, "–", "ig"): (0.87, 0.11, 96.88),
    ("cifar10", 3, "PRECODE", "pig"): (0.32, 0.09, 3.91),
    ("cifar10", 3, "PRECODE", "wiig"): (0.83, 0.15, 96.09),
    ("cifar10", 3, "PRECODE", "vbia"): (0.88, 0.07, 99.22),
    ("cifar10", 3, "CVB", "pig"): (0.21, 0.08, 0.0),
    ("cifar10", 3, "CVB", "wiig"): (0.78, 0.14, 92.19),
    ("cifar10", 3, "CVB", "vbia"): (0.72, 0.13, 93.75),
}

TABLES = (1, 2, 3)


def specs_for(table: int, *, dp_sigma: float = 1e-3, dp_clip: float = 20.0,
              prune_rates: Sequence[float] = (0.9, 0.95, 0.99)):
    """(defense label, stack, attack) rows of one table, in the paper's order."""
    none = defenses.DefenseStack()
    rows = [("–", none, "ig")]
    if table == 1:
        stack = defenses.DefenseStack(dp=defenses.DPConfig(dp_clip, dp_sigma))
        label = f"DP ({dp_clip:g}, {dp_sigma:g})"
        rows += [(label, stack, a) for a in ("ig", "wiig", "dpia")]
    elif table == 2:
        for p in prune_rates:
            stack = defenses.DefenseStack(prune=p)
            rows += [(f"GP {p:g}", stack, a) for a in ("ig", "gpia")]
    elif table == 3:
        for kind, label in (("precode", "PRECODE"), ("cvb", "CVB")):
            stack = defenses.DefenseStack(bottleneck=kind)
            rows += [(label, stack, a) for a in ("pig", "wiig", "vbia")]
    else:
        raise ValueError(f"Unknown table {table}; valid: {', '.join(map(str, TABLES))}.")
    return rows


def markdown(dataset: str, model: str, table: int, labelled_rows) -> str:
    """The table in the paper's layout, our numbers beside the paper's."""
    header = ["Dataset", "Model", "Defense", "Attack", "Victims", "SSIM ↓", "ASR [%] ↓",
              "Paper SSIM", "Paper ASR [%]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in labelled_rows:
        paper = PAPER.get((dataset, table, label, row.attack)) if model == "cnn" else None
        lines.append("| " + " | ".join([
            tables.DATASET_LABELS.get(dataset, dataset), model, label, row.attack.upper(),
            str(row.n_victims), f"{row.ssim_mean:.2f} (± {row.ssim_std:.2f})",
            f"{100 * row.asr:.2f}",
            f"{paper[0]:.2f} (± {paper[1]:.2f})" if paper else "–",
            f"{paper[2]:.2f}" if paper else "–"]) + " |")
    return "\n".join(lines) + "\n"


def run(config: pipeline.AblationConfig, table: int, workdir: str | Path,
        **spec_options: Any) -> str:
    """Runs one table's rows and writes ``table<N>.md``; returns the Markdown."""
    labelled = specs_for(table, **spec_options)
    rows = pipeline.run_rows(config, workdir, [(s, a) for _, s, a in labelled],
                             write_outputs=False)
    text = (f"# Table {table} layout: targeted attacks, {config.model} on {config.dataset}\n\n"
            f"{config.victims} victims, up to {config.ig.max_iters} iterations "
            f"(preset {config.preset}); the paper used 128 victims and 20,000 iterations.\n\n"
            + markdown(config.dataset, config.model, table,
                       [(label, row) for (label, _, _), row in zip(labelled, rows, strict=True)]))
    results.write_text(Path(workdir) / f"table{table}.md", text)
    report.write_report_safely(workdir)  # report.html with the table just written
    print(text, flush=True)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.targeted",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=int, required=True, choices=TABLES)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    parser.add_argument("--model", default="cnn", choices=["cnn"])
    parser.add_argument("--model-options", default=None, help="e.g. padding=VALID")
    parser.add_argument("--victims", type=int, default=None)
    parser.add_argument("--max-iters", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="paper", choices=sorted(pipeline.PRESETS))
    parser.add_argument("--dp-sigma", type=float, default=1e-3, help="Table 1's noise (1e-3)")
    parser.add_argument("--prune-rates", default="0.9,0.95,0.99", help="Table 2's rates")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", default=None, help="default runs/targeted_<dataset>_<preset>")
    args = parser.parse_args(argv)
    preset = pipeline.PRESETS[args.preset]
    cfg = preset["ig"]
    if args.max_iters is not None:
        cfg = dataclasses.replace(cfg, max_iters=args.max_iters)
    try:
        model_options = pipeline.parse_model_options(args.model_options)
    except ValueError as e:
        print(f"error: {e}", flush=True)
        return 2
    config = pipeline.AblationConfig(
        model=args.model, model_options=model_options, dataset=args.dataset, ig=cfg,
        preset=args.preset,
        victims=args.victims if args.victims is not None else preset["victims"],
        seed=args.seed, data_dir=args.data_dir, data_source=args.data_source,
        progress=not args.no_progress)
    out = Path(args.out or f"runs/targeted_{args.dataset}_{args.preset}")
    try:
        with results.sigterm_as_interrupt():
            run(config, args.table, out, dp_sigma=args.dp_sigma,
                prune_rates=[float(p) for p in args.prune_rates.split(",")])
    except (ValueError, results.FolderBusyError) as e:
        print(f"error: {e}", flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished rows are in {out / 'results.jsonl'}. Rerun the same "
              f"command to resume.", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
