"""``run(config, workdir)``: every (seed, stack, attack) row of an ablation, resumable.

A finished row is never recomputed: its identity (everything that decides its numbers)
is hashed into a row id, and a rerun reuses a row with that id from
``<workdir>/results.jsonl``. A running attack or FedAvg training is checkpointed about
every minute under ``<workdir>/checkpoints`` and resumes from there.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jgi import data, defenses, figures, models, report, results, tables
from jgi.attacks import ATTACKS
from jgi.pipeline import rows as row_builders
from jgi.pipeline.config import AblationConfig
from jgi.pipeline.rows import say
from jgi.records import AttackRow, Row, from_json


def run(config: AblationConfig, workdir: str | os.PathLike) -> list[Row]:
    """Runs (or reuses) the attack and utility rows of every stack in ``config``.

    Writes ``results.jsonl`` (one JSON row per result, schema in
    ``docs/results-schema.md``), ``table.md`` and ``table.csv`` (the core paper's
    Table 4 layout, with its figures beside ours) and ``reconstructions.png``.

    Args:
      config: the :class:`AblationConfig`.
      workdir: output folder for results.jsonl, table.md/.csv, reconstructions.png,
        per-row reconstructions and checkpoints.

    Returns:
      The rows, in the order of ``config.stacks``.
    """
    specs = [(config.stack(names), config.attack) for names in config.stacks]
    return run_rows(config, workdir, specs)


def run_rows(config: AblationConfig, workdir: str | os.PathLike,
             specs: Sequence[tuple[defenses.DefenseStack, str]], *,
             write_outputs: bool = True) -> list[Row]:
    """Runs (or reuses) one row per (defense stack, attack name) in ``specs``.

    Every stack and attack is validated before any data are loaded, so a bad
    combination fails in a second, not after an hour of attacks.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for stack, attack in specs:
        if attack not in ATTACKS:
            raise ValueError(f"Unknown attack {attack!r}; valid: {', '.join(ATTACKS)}.")
        model = models.get(config.model, **dict(config.model_options),
                           **stack.model_options())  # refuses bad placements and options
        ATTACKS[attack](stack).check(model, stack)  # refuses attacks without their defense
        if stack.encoding is not None and config.labels == "idlg":
            raise ValueError("--labels=idlg assumes one-hot labels; it cannot be combined "
                             f"with {stack.encoding.kind}, whose labels are mixed.")

    with results.lock_workdir(workdir):
        return _run_jobs(config, workdir, specs, write_outputs)


def _run_jobs(config: AblationConfig, workdir: Path, specs, write_outputs: bool) -> list[Row]:
    dataset = data.load(config.dataset, data_dir=config.data_dir, source=config.data_source,
                        verify=config.verify)
    say(f"data:   {dataset.describe()}")
    stacks: list[defenses.DefenseStack] = []
    for stack, _ in specs:
        if stack not in stacks:
            stacks.append(stack)
    jobs = []  # (seed config, stack, attack or None for the utility row)
    for seed in range(config.seed, config.seed + config.seeds):
        seeded = dataclasses.replace(config, seed=seed)
        for stack in stacks:
            if config.privacy:
                jobs += [(seeded, stack, a) for s_, a in specs if s_ == stack]
            if config.fedavg is not None:
                jobs.append((seeded, stack, None))
    normalized = None
    out: list[Row] = []
    for n, (seeded, stack, attack) in enumerate(jobs, 1):
        model = models.get(config.model, num_classes=dataset.info.num_classes,
                           **dict(config.model_options), **stack.model_options())
        identity = (row_builders.attack_identity(seeded, dataset, model, stack, attack)
                    if attack is not None
                    else row_builders.utility_identity(seeded, dataset, model, stack))
        rid = results.row_id(identity)
        existing = [r for r in results.read_rows(workdir / "results.jsonl")
                    if r.get("row_id") == rid]
        what = attack.upper() if attack is not None else "FedAvg utility"
        label = f"{what} vs {', '.join(stack.names) or 'no defense'}, seed {seeded.seed}"
        if existing:
            say(f"[{n}/{len(jobs)}] {label}: row {rid} is already in "
                f"{workdir / 'results.jsonl'}; reusing it.")
            out.append(from_json(existing[-1]))
            continue
        say(f"[{n}/{len(jobs)}] {label}")
        if attack is not None:
            victims = row_builders.victim_set(seeded, dataset)
            out.append(row_builders.attack_row(seeded, dataset, victims, model, stack, attack,
                                               identity, rid, workdir))
        else:
            if normalized is None:
                normalized = data.normalize(dataset.x_train, dataset.info)
            out.append(row_builders.utility_row(seeded, dataset, normalized, model, stack,
                                                identity, rid, workdir))
    if write_outputs:
        write_outputs_for(workdir, out)
    return out


def write_outputs_for(workdir: Path, rows: Sequence[Row]) -> None:
    """Writes table.md / table.csv (all rows of the folder), reconstructions.png and
    report.html (:mod:`jgi.report`; every appended row refreshed it already, this adds
    the figure, and writes it for a rerun that only reused rows)."""
    all_rows = [from_json(r) for r in results.read_rows(workdir / "results.jsonl")]
    header = (
        "# Reconstruction results\n\n"
        f"Rows of `{workdir / 'results.jsonl'}`. SSIM: mean (± std) over victims; ASR: share "
        "of victims with SSIM > 0.5. The paper columns are the core paper's Table 4 (CNN, "
        "128 victims, attacked with its CDIA, which equals IG when no defense is used).\n\n")
    results.write_text(workdir / "table.md", header + tables.markdown_table(all_rows))
    results.write_text(workdir / "table.csv", tables.csv_table(all_rows))
    loaded = []
    for row in rows:
        if not isinstance(row, AttackRow):
            continue
        npz = workdir / "reconstructions" / f"{row.row_id}.npz"
        if npz.exists():
            with np.load(npz) as d:
                loaded.append((row, d["originals"], d["reconstructions"], d["ssim"]))
    png = workdir / "reconstructions.png"
    written = [workdir / "results.jsonl", workdir / "table.md", workdir / "table.csv"]
    if loaded:  # a utility-only command leaves an earlier run's figure as it was
        written.append(png)
    if len(loaded) == 1:
        row, originals, recon, ssim = loaded[0]
        title = (f"{row.attack.upper()} on {row.model} / {row.dataset}, defenses: "
                 f"{', '.join(row.defenses) or 'none'}; SSIM {row.ssim_mean:.2f}, "
                 f"ASR {100 * row.asr:.1f}%")
        figures.reconstruction_grid(originals, recon, ssim, png, title=title)
    elif loaded:
        columns = [(figures.stack_label(r.defenses), rec, s) for r, _, rec, s in loaded]
        first = loaded[0][0]
        figures.stack_grid(columns, loaded[0][1], png,
                           title=f"{first.attack.upper()} on {first.model} / "
                                 f"{first.dataset}: one column per defense stack")
    if report.write_report_safely(workdir) is not None:  # with the figure just drawn
        written.append(workdir / report.REPORT_NAME)
    say("")
    say(tables.markdown_table(rows))
    say(f"wrote {', '.join(str(p) for p in written)}")
