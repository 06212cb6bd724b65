"""Fig. 48 of the FedAvg leakage study: test accuracy of its models after FedAvg.

    python -m experiments.fedavg_accuracy --preset=cpu --models=study_cnn,mlp
    python -m experiments.fedavg_accuracy --preset=paper --models=study_cnn,resnet18,mlp

Zhu, Huang, Xie, "Privacy attack in federated learning is not easy" (2024), section
IV-F, Fig. 48: CIFAR-10, 10 clients, Dirichlet(0.5) non-IID, 20% of each client's data
held out, 100 rounds of 2 local epochs of SGD (batch 50, lr 0.1 decayed x0.95 per round,
momentum 0.5, weight decay 1e-5) with random-crop and flip augmentation; test accuracy
after 100 rounds: CNN 73%, ResNet-18 86%, MLP 51% (ResNet-18 with an imprint block does
not converge).

Presets (``--rounds``, ``--train-examples``, ``--clients`` override them):

- ``paper``: the setting above on all 50,000 CIFAR-10 training images.
- ``cpu``: the same federation on a seeded random subset of 2,000 training images
  (Dirichlet over the subset, so clients keep unequal sizes and skewed labels) for 3
  rounds: minutes per model on 2 CPU cores.

The test set is the dataset's; the offline CIFAR-10 file holds only the first 1,000 of
the 10,000 official test images (``jgi.data``), and every row says which it used.
Rows go to ``<out>/rows.jsonl`` (one per model, with the accuracy curve), the table to
``<out>/table.md``; a model whose row is already there is skipped, and an interrupted
run resumes from its checkpoint in ``<out>/checkpoints/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from jgi import data, fl, models, report, results
from jgi.fl import federation as fed

PAPER_ACCURACY = {"study_cnn": 0.73, "resnet18": 0.86, "mlp": 0.51}
"""Fig. 48's test accuracies after 100 rounds (the text of section IV-F)."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One scale of the experiment.

    Attributes:
      rounds: FedAvg rounds.
      train_examples: training images split over the clients (None: all).
      clients: number of clients.
      beta: Dirichlet concentration (None: IID).
      augment: random crop and flip in local training.
      eval_every: evaluate every this many rounds (and after the last).
    """

    rounds: int
    train_examples: int | None
    clients: int = 10
    beta: float | None = 0.5
    augment: bool = True
    eval_every: int = 1

    def __post_init__(self):
        if self.rounds < 1 or self.clients < 1 or self.eval_every < 1:
            raise ValueError(f"rounds, clients and eval_every must be >= 1, got {self.rounds}, "
                             f"{self.clients} and {self.eval_every}.")
        if self.train_examples is not None and self.train_examples < 10 * self.clients:
            raise ValueError(f"train_examples must be None (all) or at least 10 per client "
                             f"({10 * self.clients}), got {self.train_examples}.")
        if self.beta is not None and not self.beta > 0:
            raise ValueError(f"beta must be > 0 or None (IID), got {self.beta}.")


PRESETS = {
    "paper": Preset(rounds=100, train_examples=None, eval_every=5),
    "cpu": Preset(rounds=3, train_examples=2000),
}


def federation_data(dataset: data.Dataset, preset: Preset, seed: int):
    """``(clients, x_test, y_test, shares)``: the preset's split of the training set."""
    key = jax.random.key(seed)
    k_subset, k_split = jax.random.split(key)
    n = len(dataset.y_train)
    subset = np.arange(n)
    if preset.train_examples is not None and preset.train_examples < n:
        subset = np.sort(np.asarray(jax.random.choice(k_subset, n, (preset.train_examples,),
                                                      replace=False)))
    x = data.normalize(dataset.x_train[subset], dataset.info)
    y = dataset.y_train[subset]
    if preset.beta is None:
        shares = fl.iid_shares(k_split, len(y), preset.clients)
    else:
        shares = fl.dirichlet_split(k_split, y, preset.clients, preset.beta)
    clients = fed.clients_from_shares(x, y, shares)
    return clients, data.normalize(dataset.x_test, dataset.info), dataset.y_test, shares


def run_model(name: str, dataset: data.Dataset, preset: Preset, preset_name: str, seed: int,
              out: Path, *, progress: bool = True) -> dict:
    """Trains one model with the study's FedAvg and returns its row."""
    clients, x_test, y_test, shares = federation_data(dataset, preset, seed)
    model = models.get(name, num_classes=dataset.info.num_classes)
    config = fed.FederationConfig(rounds=preset.rounds, local=fed.STUDY_ACCURACY_LOCAL,
                                  attack_clients=(), augment=preset.augment,
                                  eval_every=preset.eval_every)
    ckpt = fed.federation_checkpoint(out / "checkpoints" / name, every_seconds=60.0)
    result = fed.train(model, clients, x_test, y_test, jax.random.key(seed), config,
                       checkpoint=ckpt, progress=f"{name}" if progress else False)
    local = config.local
    h = result.history
    row = {
        "experiment": "fedavg_accuracy", "model": name, "dataset": dataset.info.name,
        "preset": preset_name, "seed": seed, "rounds": preset.rounds,
        "clients": preset.clients, "split": _split_name(preset),
        "requested_train_examples": preset.train_examples,
        "train_examples": int(sum(len(t) for t in shares.train_idx)),
        "heldout_examples": int(sum(len(t) for t in shares.test_idx)),
        "client_sizes": [int(s) for s in shares.sizes],
        "local": dataclasses.asdict(local), "augment": preset.augment,
        "test_examples": int(len(y_test)), "data": dataset.describe(),
        "test_accuracy": h["test_accuracy"][-1], "max_test_accuracy": max(h["test_accuracy"]),
        "heldout_accuracy": h["heldout_accuracy"][-1],
        "curve": {k: h[k] for k in ("round", "train_loss", "test_accuracy", "heldout_accuracy")},
        "paper_test_accuracy": PAPER_ACCURACY.get(name),
        "wall_seconds": result.wall_seconds, "samples_per_second": result.samples_per_second,
        "device": jax.devices()[0].device_kind, "resumed_from_round": ckpt.restored_step,
    }
    ckpt.clear()
    return row


IDENTITY = ("model", "dataset", "preset", "seed", "rounds", "clients", "split", "augment",
            "requested_train_examples")


def identity(row: dict) -> dict:
    """What determines a row's result (a row with the same identity is not run again)."""
    return {k: row.get(k) for k in IDENTITY}


def _identity_of(name: str, dataset: data.Dataset, preset: Preset, preset_name: str,
                 seed: int) -> dict:
    return {"model": name, "dataset": dataset.info.name, "preset": preset_name, "seed": seed,
            "rounds": preset.rounds, "clients": preset.clients, "split": _split_name(preset),
            "augment": preset.augment, "requested_train_examples": preset.train_examples}


def _split_name(preset: Preset) -> str:
    return "iid" if preset.beta is None else f"dirichlet({preset.beta})"


def markdown(rows: Sequence[dict]) -> str:
    lines = ["| model | dataset | preset | clients (split) | rounds | train / held-out / test "
             "images | test acc. | held-out acc. | paper (100 rounds) | time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = r.get("paper_test_accuracy")
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['preset']} | {r['clients']} ({r['split']}) "
            f"| {r['rounds']} | {r['train_examples']:,} / {r['heldout_examples']:,} / "
            f"{r['test_examples']:,} | {r['test_accuracy']:.1%} | {r['heldout_accuracy']:.1%} "
            f"| {'-' if paper is None else f'{paper:.0%}'} | {r['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--models", default="study_cnn,mlp",
                        help="comma-separated registered models (the study: study_cnn, "
                             "resnet18, mlp)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--train-examples", type=int, default=None,
                        help="training images split over the clients (0: all)")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--iid", action="store_true", help="IID instead of Dirichlet(0.5)")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--dataset", default="cifar10", choices=sorted(data.DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/fedavg_accuracy")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in models.MODELS]
    if not names or unknown:
        print(f"error: unknown model(s) {unknown or args.models!r}; valid: "
              f"{', '.join(sorted(models.MODELS))}")
        return 2
    try:
        base = PRESETS[args.preset]
        changes = {k: v for k, v in (("rounds", args.rounds), ("clients", args.clients))
                   if v is not None}
        if args.train_examples is not None:
            changes["train_examples"] = args.train_examples or None
        if args.iid:
            changes["beta"] = None
        if args.no_augment:
            changes["augment"] = False
        preset = dataclasses.replace(base, **changes)
        dataset = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
    except (ValueError, data.DataError) as e:
        print(f"error: {e}")
        return 2
    print(dataset.describe())
    out = Path(args.out)
    rows_path = out / "rows.jsonl"
    with results.lock_workdir(out), results.sigterm_as_interrupt():
        done = {results.row_id(identity(r)) for r in results.read_rows(rows_path)}
        for name in names:
            probe = _identity_of(name, dataset, preset, args.preset, args.seed)
            start = time.perf_counter()
            if results.row_id(probe) not in done:
                row = run_model(name, dataset, preset, args.preset, args.seed, out,
                                progress=not args.no_progress)
                results.append_row(rows_path, row)
                print(f"{name}: test accuracy {row['test_accuracy']:.1%} after "
                      f"{preset.rounds} rounds ({time.perf_counter() - start:.0f} s)")
            else:
                print(f"{name}: row already in {rows_path}, skipped")
        rows = results.read_rows(rows_path)
        table = markdown(rows)
        results.write_text(out / "table.md", table)
        report.write_report_safely(out, rows_path.name)  # report.html with table.md
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
