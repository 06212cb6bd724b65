"""Tables in the layout of the core paper's Table 4, from ``results.jsonl`` rows.

Columns: dataset, model, DO (dropout), DP, GP (gradient pruning), PM (privacy module:
P = PRECODE, C = CVB), Enc (input encoding: MixUp or InstaHide; not in the paper),
attack, SSIM mean (± std over victims), ASR in %, the same two with the ablation
paper's authors' SSIM (:func:`jgi.metrics.ssim_authors`; "–" for rows made before it was
recorded), accuracy (test accuracy of the federated model, mean ± std over seeds), and
the paper's published SSIM, ASR and accuracy for the same CNN row where one exists
(:data:`PAPER_TABLE4`). Rows in the authors' layout (``layout="authors"``) say so in the
Settings column and never pool with rows in jgi's.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from jgi.records import AttackRow, Row, UtilityRow, from_json
from jgi.results import canonical_defenses

# Scheliga et al., "Combining stochastic defenses to resist gradient inversion: an
# ablation study", Table 4 (CNN, attacked with CDIA; accuracy over 3 seeds):
# (dataset, defense stack, SSIM mean, SSIM std, ASR %, accuracy %, accuracy std).
_PAPER_TABLE4_ROWS = (
    ("mnist", "", 0.95, 0.06, 100.0, 99.10, 0.04),
    ("mnist", "precode", 0.95, 0.07, 100.0, 98.33, 0.02),
    ("mnist", "cvb", 0.88, 0.09, 99.22, 99.15, 0.05),
    ("mnist", "prune", 0.95, 0.04, 100.0, 99.00, 0.09),
    ("mnist", "prune,precode", 0.93, 0.09, 100.0, 98.41, 0.04),
    ("mnist", "prune,cvb", 0.84, 0.08, 99.22, 99.06, 0.05),
    ("mnist", "dp", 0.93, 0.06, 100.0, 99.06, 0.00),
    ("mnist", "dp,precode", 0.49, 0.12, 50.78, 98.19, 0.03),
    ("mnist", "dp,cvb", 0.14, 0.05, 0.0, 99.18, 0.00),
    ("mnist", "dp,prune", 0.95, 0.05, 100.0, 98.97, 0.05),
    ("mnist", "dp,prune,precode", 0.50, 0.13, 54.69, 98.22, 0.14),
    ("mnist", "dp,prune,cvb", 0.14, 0.04, 0.0, 99.19, 0.05),
    ("mnist", "dropout", 0.97, 0.02, 100.0, 99.12, 0.03),
    ("mnist", "dropout,precode", 0.97, 0.04, 100.0, 98.41, 0.02),
    ("mnist", "dropout,cvb", 0.91, 0.06, 100.0, 99.09, 0.08),
    ("mnist", "dropout,prune", 0.97, 0.02, 100.0, 98.95, 0.06),
    ("mnist", "dropout,prune,precode", 0.96, 0.06, 100.0, 98.24, 0.03),
    ("mnist", "dropout,prune,cvb", 0.85, 0.09, 99.22, 99.05, 0.03),
    ("mnist", "dropout,dp", 0.56, 0.14, 69.53, 99.06, 0.05),
    ("mnist", "dropout,dp,precode", 0.40, 0.20, 39.06, 98.28, 0.00),
    ("mnist", "dropout,dp,cvb", 0.12, 0.06, 0.0, 99.12, 0.01),
    ("mnist", "dropout,dp,prune", 0.56, 0.14, 71.88, 98.95, 0.04),
    ("mnist", "dropout,dp,prune,precode", 0.37, 0.19, 27.34, 98.23, 0.03),
    ("mnist", "dropout,dp,prune,cvb", 0.12, 0.05, 0.0, 99.15, 0.06),
    ("cifar10", "", 0.87, 0.11, 96.88, 62.53, 0.16),
    ("cifar10", "precode", 0.88, 0.07, 99.22, 59.48, 0.23),
    ("cifar10", "cvb", 0.72, 0.13, 93.75, 67.19, 0.64),
    ("cifar10", "prune", 0.86, 0.09, 98.44, 62.53, 0.34),
    ("cifar10", "prune,precode", 0.86, 0.10, 98.44, 59.53, 0.11),
    ("cifar10", "prune,cvb", 0.66, 0.09, 92.97, 67.34, 0.28),
    ("cifar10", "dp", 0.83, 0.11, 97.66, 62.31, 0.00),
    ("cifar10", "dp,precode", 0.40, 0.14, 25.78, 57.39, 0.26),
    ("cifar10", "dp,cvb", 0.04, 0.02, 0.0, 65.86, 0.25),
    ("cifar10", "dp,prune", 0.81, 0.10, 96.88, 60.72, 0.51),
    ("cifar10", "dp,prune,precode", 0.35, 0.14, 16.41, 56.26, 0.01),
    ("cifar10", "dp,prune,cvb", 0.04, 0.02, 0.0, 65.45, 1.04),
    ("cifar10", "dropout", 0.91, 0.05, 100.0, 64.36, 0.12),
    ("cifar10", "dropout,precode", 0.89, 0.07, 99.22, 59.77, 0.16),
    ("cifar10", "dropout,cvb", 0.75, 0.08, 100.0, 67.80, 0.41),
    ("cifar10", "dropout,prune", 0.88, 0.05, 100.0, 62.43, 0.24),
    ("cifar10", "dropout,prune,precode", 0.87, 0.07, 100.0, 59.83, 0.34),
    ("cifar10", "dropout,prune,cvb", 0.67, 0.11, 95.31, 67.68, 0.48),
    ("cifar10", "dropout,dp", 0.37, 0.14, 19.53, 63.21, 0.27),
    ("cifar10", "dropout,dp,precode", 0.31, 0.17, 14.84, 57.32, 0.19),
    ("cifar10", "dropout,dp,cvb", 0.04, 0.02, 0.0, 66.00, 0.42),
    ("cifar10", "dropout,dp,prune", 0.37, 0.13, 16.41, 61.51, 0.14),
    ("cifar10", "dropout,dp,prune,precode", 0.25, 0.17, 6.25, 56.26, 0.01),
    ("cifar10", "dropout,dp,prune,cvb", 0.04, 0.02, 0.0, 65.38, 1.01),
)

PAPER_TABLE4: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {
    (ds, tuple(stack.split(",")) if stack else ()): {
        "ssim_mean": s, "ssim_std": sd, "asr_percent": asr, "accuracy": acc,
        "accuracy_std": acc_sd}
    for ds, stack, s, sd, asr, acc, acc_sd in _PAPER_TABLE4_ROWS
}

DATASET_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "pneumoniamnist": "PneumoniaMNIST"}
YES, NO = "✓", "✗"


ENCODING_LABELS = {"mixup": "MixUp", "instahide": "InstaHide"}


def defense_columns(defenses: Iterable[str]) -> tuple[str, str, str, str, str]:
    """(DO, DP, GP, PM, Enc) marks of a defense stack, as the paper prints the first four."""
    d = set(defenses)
    pm = "P" if "precode" in d else "C" if "cvb" in d else NO
    enc = next((label for name, label in ENCODING_LABELS.items() if name in d), NO)
    return (YES if "dropout" in d else NO, YES if "dp" in d else NO,
            YES if "prune" in d else NO, pm, enc)


def settings_note(row: Row | dict[str, Any]) -> str:
    """Defense settings that differ from the paper's ablation (e.g. ``σ=0.001, p=0.9``)."""
    described = (from_json(row).config or {}).get("defenses")
    if not isinstance(described, dict):
        return ""
    notes = []
    names = described.get("names", [])
    if "dropout" in names and described.get("dropout") != 0.25:
        notes.append(f"rate={described['dropout']:g}")
    dp = described.get("dp") or {}
    if "dp" in names and dp.get("noise_multiplier") != 1e-4:
        notes.append(f"σ={dp['noise_multiplier']:g}")
    if "dp" in names and dp.get("clip_norm") != 20.0:
        notes.append(f"τ={dp['clip_norm']:g}")
    if "prune" in names and described.get("prune") != 0.5:
        notes.append(f"p={described['prune']:g}")
    return ", ".join(notes)


def _group_key(row: AttackRow):
    """Attack rows that differ only in their seed share a key."""
    config = dict(row.config or {})
    config.pop("seed", None)
    config.pop("preset", None)
    return (row.dataset, row.model, tuple(canonical_defenses(row.defenses)),
            row.attack, json.dumps(config, sort_keys=True, default=str), row.layout)


def _stack_key(row: Row):
    """What attack and utility rows of the same defense stack have in common."""
    return (row.dataset, row.model, tuple(canonical_defenses(row.defenses)),
            settings_note(row), (row.config or {}).get("preset"), row.layout)


def aggregate(rows: Iterable[Row | dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (stack, attack): SSIM/ASR pooled over seeds' victims; accuracy (from
    the utility rows of the same stack) as mean and std over seeds. Stacks with only a
    utility row get an entry with attack "–". Rows are :mod:`jgi.records` rows or their
    JSON dicts."""
    rows = [from_json(r) for r in rows]
    utility: dict[Any, list[float]] = defaultdict(list)
    for row in rows:
        if isinstance(row, UtilityRow):
            utility[_stack_key(row)].append(row.accuracy)
    groups: dict[Any, list[AttackRow]] = defaultdict(list)
    for row in rows:
        if isinstance(row, AttackRow):
            groups[_group_key(row)].append(row)
    merged, covered = [], set()
    for (dataset, model, defenses, attack, _, layout), members in groups.items():
        ssims = np.concatenate([np.asarray(r.per_victim_ssim, float) for r in members])
        # the authors' SSIM only when every seed's row recorded it
        authors = (np.concatenate([np.asarray(r.per_victim_ssim_authors, float)
                                   for r in members])
                   if all(r.per_victim_ssim_authors for r in members) else None)
        key = _stack_key(members[0])
        covered.add(key)
        accs = utility.get(key, [])
        merged.append({
            "dataset": dataset, "model": model, "defenses": list(defenses), "attack": attack,
            "settings": settings_note(members[0]),
            "seeds": sorted(r.seed for r in members),
            "n_victims": int(ssims.size),
            "ssim_mean": float(ssims.mean()), "ssim_std": float(ssims.std()),
            "asr": float(np.mean(ssims > 0.5)),
            "ssim_authors_mean": float(authors.mean()) if authors is not None else None,
            "ssim_authors_std": float(authors.std()) if authors is not None else None,
            "asr_authors": float(np.mean(authors > 0.5)) if authors is not None else None,
            "layout": layout,
            "psnr_mean": float(np.mean([r.psnr_mean for r in members])),
            "accuracy": float(np.mean(accs)) if accs else None,
            "accuracy_std": float(np.std(accs)) if accs else None,
            "accuracy_seeds": len(accs),
        })
    for key, accs in utility.items():
        if key in covered:
            continue
        dataset, model, defenses, settings, _, layout = key
        merged.append({"dataset": dataset, "model": model, "defenses": list(defenses),
                       "attack": "–", "settings": settings, "n_victims": 0,
                       "ssim_mean": None, "ssim_std": None, "asr": None,
                       "ssim_authors_mean": None, "ssim_authors_std": None,
                       "asr_authors": None, "layout": layout,
                       "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
                       "accuracy_seeds": len(accs)})
    order = {d: i for i, d in enumerate(DATASET_LABELS)}
    stack_order = {(ds, st): i for i, (ds, st) in enumerate(PAPER_TABLE4)}
    merged.sort(key=lambda r: (order.get(r["dataset"], 99), r["model"],
                               stack_order.get((r["dataset"], tuple(r["defenses"])), 999),
                               r["defenses"], r["attack"], r["layout"]))
    return merged


def _fmt_acc(row):
    if row.get("accuracy") is None:
        return "–"
    if row.get("accuracy_seeds", 0) < 2:  # a std over one seed would read as "no spread"
        return f"{100 * row['accuracy']:.2f} (1 seed)"
    return f"{100 * row['accuracy']:.2f} (± {100 * row['accuracy_std']:.2f})"


def _settings_cell(r: dict[str, Any]) -> str:
    cell = r["settings"] or "paper"
    return cell if r.get("layout", "jgi") == "jgi" else f"{cell}, authors' layout"


def _fmt_ssim(mean, std) -> str:
    return f"{mean:.2f} (± {std:.2f})" if mean is not None else "–"


def table_rows(rows: Iterable[Row | dict[str, Any]]) -> list[list[str]]:
    """Header plus one list of cells per aggregated row."""
    out = [["Dataset", "Model", "DO", "DP", "GP", "PM", "Enc", "Settings", "Attack", "Victims",
            "SSIM ↓", "ASR [%] ↓", "Authors' SSIM ↓", "Authors' ASR [%] ↓", "Accuracy [%] ↑",
            "Paper (CDIA) SSIM", "Paper (CDIA) ASR [%]", "Paper accuracy [%]"]]
    for r in aggregate(rows):
        # Table 4's figures are CDIA's (cdia-dpia is a reading of it): other attacks' rows
        # (e.g. PIG) get none
        paper = PAPER_TABLE4.get((r["dataset"], tuple(r["defenses"]))) \
            if r["model"] == "cnn" and not r["settings"] and r["attack"] in ("cdia", "cdia-dpia") \
            else None
        out.append([
            DATASET_LABELS.get(r["dataset"], r["dataset"]), r["model"],
            *defense_columns(r["defenses"]), _settings_cell(r),
            r["attack"].upper(), str(r["n_victims"]) if r["n_victims"] else "–",
            _fmt_ssim(r["ssim_mean"], r["ssim_std"]),
            f"{100 * r['asr']:.2f}" if r["asr"] is not None else "–",
            _fmt_ssim(r["ssim_authors_mean"], r["ssim_authors_std"]),
            f"{100 * r['asr_authors']:.2f}" if r["asr_authors"] is not None else "–",
            _fmt_acc(r),
            f"{paper['ssim_mean']:.2f} (± {paper['ssim_std']:.2f})" if paper else "–",
            f"{paper['asr_percent']:.2f}" if paper else "–",
            f"{paper['accuracy']:.2f} (± {paper['accuracy_std']:.2f})" if paper else "–",
        ])
    return out


def markdown_table(rows: Iterable[Row | dict[str, Any]]) -> str:
    """The rows as a Markdown table in the paper's Table 4 layout."""
    cells = table_rows(rows)
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(c) + " |" for c in cells[1:]]
    return "\n".join(lines) + "\n"


def csv_table(rows: Iterable[Row | dict[str, Any]]) -> str:
    """The same table as CSV."""
    buf = io.StringIO()
    csv.writer(buf).writerows(table_rows(rows))
    return buf.getvalue()
