"""Attack a client's updates and report reconstruction quality in the paper's table layout.

    python -m experiments.ablation --model=cnn --dataset=mnist --out=runs/cnn_mnist
    python -m experiments.ablation --preset=smoke --out=/tmp/smoke
    python -m experiments.ablation            # no flags: the quick demo (smoke preset)

Pipeline (core paper, section 5): load the data -> 10 IID clients -> 128 victims from
client 0 -> each victim's update (batch size 1, one step, randomly initialised model)
-> the attack inverts all victims in parallel -> SSIM/PSNR/MSE/ASR -> one row appended
to ``results.jsonl``, ``table.md`` (Table 4 layout) and ``reconstructions.png``.

A finished row is never recomputed: rerunning the same command prints it again. An
interrupted attack resumes from its last checkpoint (saved about every minute under
``<out>/checkpoints``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, figures, fl, metrics, models, results, tables
from jgi.attacks import AttackCheckpoint, STOP_REASONS, ig
from jgi.attacks.labels import idlg_labels

LABEL_MODES = ("known", "idlg")


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """One ablation row's settings (defaults: the core paper's).

    Attributes:
      model: registry name (``jgi.models.MODELS``).
      dataset: ``jgi.data.DATASETS`` name.
      attack: attack name (``jgi.attacks.ATTACKS``).
      victims: number of victim images (paper: 128).
      seed: one seed for split, victims, model initialisation and attack.
      labels: "known" (paper) or "idlg" (recovered from the classifier gradient).
      num_clients, val_fraction, victim_client: the federated split (paper: 10, 0.1, 0).
      ig: the attack's hyperparameters.
      preset: the preset the settings came from (recorded only).
      data_dir, data_source, verify: where the data come from.
      progress: show progress bars.
    """

    model: str = "cnn"
    dataset: str = "mnist"
    attack: str = "ig"
    victims: int = 128
    seed: int = 0
    labels: str = "known"
    num_clients: int = 10
    val_fraction: float = 0.1
    victim_client: int = 0
    ig: ig.IGConfig = ig.IGConfig()
    preset: str = "paper"
    data_dir: str | None = None
    data_source: str = "auto"
    verify: bool = True
    progress: bool = True


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's settings (section 5.2): 128 victims, the full IG schedule.
    "paper": {"victims": 128, "ig": ig.IGConfig()},
    # Minutes on 2 CPU cores: 8 victims, a compressed schedule (plateau after 100
    # iterations, at most 1,000). Reconstructions are recognisable but not converged.
    "smoke": {"victims": 8, "ig": ig.IGConfig(max_iters=1000, plateau_patience=100,
                                             stop_patience=400, chunk_size=100)},
}


def _device_description() -> str:
    devices = jax.devices()
    d = devices[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{len(devices)}" + (
        f" ({os.cpu_count()} host cores)" if d.platform == "cpu" else "")


def _identity(config: AblationConfig, dataset: data.Dataset, model: models.Model) -> dict:
    """Everything that decides a row's numbers (and nothing that does not)."""
    return {
        "model": model.describe(), "dataset": config.dataset, "defenses": [],
        "attack": config.attack, "seed": config.seed, "victims": config.victims,
        "labels": config.labels, "num_clients": config.num_clients,
        "val_fraction": config.val_fraction, "victim_client": config.victim_client,
        "attack_config": dataclasses.asdict(config.ig),
        "data": {"source": dataset.source, "n_train": int(len(dataset.y_train))},
    }


def _print(msg: str) -> None:
    print(msg, flush=True)


def run(config: AblationConfig, workdir: str | os.PathLike) -> dict[str, Any]:
    """Runs one ablation row (or reuses it when ``workdir`` already holds it).

    Args:
      config: the :class:`AblationConfig`.
      workdir: output folder for results.jsonl, table.md, reconstructions.png,
        per-row reconstructions and attack checkpoints.

    Returns:
      The row as written to ``results.jsonl``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.labels not in LABEL_MODES:
        raise ValueError(f"Unknown label mode {config.labels!r}; valid: {', '.join(LABEL_MODES)}.")

    dataset = data.load(config.dataset, data_dir=config.data_dir, source=config.data_source,
                        verify=config.verify)
    info = dataset.info
    _print(f"data:   {dataset.describe()}")
    model = models.get(config.model, num_classes=info.num_classes)
    identity = _identity(config, dataset, model)
    rid = results.row_id(identity)
    results_path = workdir / "results.jsonl"
    recon_dir = workdir / "reconstructions"

    existing = [r for r in results.read_rows(results_path) if r.get("row_id") == rid]
    if existing:
        row = existing[-1]
        _print(f"row {rid} is already in {results_path}; reusing it (delete the row to rerun).")
    else:
        row = _attack_row(config, dataset, model, identity, rid, workdir)
    _write_outputs(workdir, row)
    return row


def _attack_row(config, dataset, model, identity, rid, workdir) -> dict[str, Any]:
    info = dataset.info
    key = jax.random.key(config.seed)
    k_split, k_victims, k_model, k_attack = (jax.random.fold_in(key, i) for i in range(4))
    split = fl.iid_split(k_split, len(dataset.y_train), config.num_clients, config.val_fraction)
    idx = fl.sample_victims(k_victims, split, config.victims, config.victim_client)
    originals = dataset.x_train[idx]
    x = jnp.asarray(data.normalize(originals, info))
    y = jnp.asarray(dataset.y_train[idx])
    params = model.init(k_model, info.image_shape)
    updates = jax.jit(lambda p, xs, ys: fl.victim_updates(model, p, xs, ys, {}))(params, x, y)

    if config.labels == "idlg":
        labels = idlg_labels(updates, model.classifier)
        label_accuracy = float(jnp.mean(labels == y))
        _print(f"labels: recovered with iDLG, {100 * label_accuracy:.1f}% correct")
    else:
        labels, label_accuracy = y, None
        _print("labels: known to the attacker (paper's setting)")

    cfg = config.ig
    _print(f"attack: {config.attack.upper()} on {config.victims} victims of client "
           f"{config.victim_client}, {model.name} ({info.name}), up to {cfg.max_iters} "
           f"iterations, device {_device_description()}")
    checkpoint = AttackCheckpoint(workdir / "checkpoints" / rid)
    result = ig.reconstruct(
        model, params, updates, labels, k_attack, cfg, input_shape=info.image_shape,
        bounds=data.input_bounds(info),
        progress=f"{config.attack} {info.name}" if config.progress else False,
        checkpoint=checkpoint)
    if checkpoint.restored_iteration is not None:
        _print(f"resumed from the checkpoint at iteration {checkpoint.restored_iteration}")
    recon = np.clip(data.denormalize(result.best["x"], info), 0.0, 1.0)
    summary = metrics.summarize(originals, recon)

    recon_dir = workdir / "reconstructions"
    recon_dir.mkdir(exist_ok=True)
    np.savez_compressed(recon_dir / f"{rid}.npz", originals=originals, reconstructions=recon,
                        ssim=np.asarray(summary["per_victim_ssim"]), labels=np.asarray(y),
                        victim_indices=idx)
    stop_counts = {name: int(np.sum(result.stop_reason == i))
                   for i, name in enumerate(STOP_REASONS) if np.any(result.stop_reason == i)}
    row = {
        "row_id": rid,
        "model": config.model,
        "dataset": config.dataset,
        "defenses": [],
        "attack": config.attack,
        "seed": config.seed,
        "n_victims": config.victims,
        **{k: summary[k] for k in ("ssim_mean", "ssim_std", "psnr_mean", "psnr_std",
                                   "mse_mean", "mse_std", "asr", "per_victim_ssim",
                                   "per_victim_psnr", "per_victim_mse")},
        "accuracy": None,
        "iterations": [int(i) for i in result.iterations],
        "iterations_mean": float(np.mean(result.iterations)),
        "stop_reasons": stop_counts,
        "best_loss_mean": float(np.mean(result.best_loss)),
        "label_accuracy": label_accuracy,
        "victim_indices": [int(i) for i in idx],
        "wall_seconds": result.wall_seconds,
        "compile_seconds": result.compile_seconds,
        "device": _device_description(),
        "data_origin": dataset.origin,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {**identity, "preset": config.preset},
    }
    results.append_row(workdir / "results.jsonl", row)
    checkpoint.clear()
    return row


def _write_outputs(workdir: Path, row: dict[str, Any]) -> None:
    rows = results.read_rows(workdir / "results.jsonl")
    header = (
        "# Reconstruction results\n\n"
        f"Rows of `{workdir / 'results.jsonl'}`. SSIM: mean (± std) over victims; ASR: share "
        "of victims with SSIM > 0.5. The paper columns are the core paper's Table 4 (CNN, "
        "128 victims, its CDIA attack, which equals IG when no defense is used).\n\n"
    )
    results.write_text(workdir / "table.md", header + tables.markdown_table(rows))
    results.write_text(workdir / "table.csv", tables.csv_table(rows))
    npz = workdir / "reconstructions" / f"{row['row_id']}.npz"
    if npz.exists():
        with np.load(npz) as d:
            title = (f"{row['attack'].upper()} on {row['model']} / {row['dataset']}, defenses: "
                     f"{', '.join(row['defenses']) or 'none'}; SSIM {row['ssim_mean']:.2f}, "
                     f"ASR {100 * row['asr']:.1f}%")
            figures.reconstruction_grid(d["originals"], d["reconstructions"], d["ssim"],
                                        workdir / "reconstructions.png", title=title)
    _print("")
    _print(tables.markdown_table([row]))
    _print(f"SSIM {row['ssim_mean']:.3f} (± {row['ssim_std']:.3f}), ASR {100 * row['asr']:.2f}%, "
           f"PSNR {row['psnr_mean']:.2f} dB, mean iterations {row['iterations_mean']:.0f}, "
           f"{row['wall_seconds']:.1f} s")
    _print(f"wrote {workdir / 'results.jsonl'}, {workdir / 'table.md'}, "
           f"{workdir / 'reconstructions.png'}")


def build_config(args: argparse.Namespace) -> AblationConfig:
    """Applies the preset, then every flag given explicitly."""
    preset = PRESETS[args.preset]
    attack_cfg: ig.IGConfig = preset["ig"]
    overrides = {k: v for k, v in {
        "max_iters": args.max_iters, "tv_weight": args.tv_weight, "lr": args.lr,
        "chunk_size": args.chunk_size}.items() if v is not None}
    if overrides:
        attack_cfg = dataclasses.replace(attack_cfg, **overrides)
    return AblationConfig(
        model=args.model, dataset=args.dataset, attack=args.attack,
        victims=args.victims if args.victims is not None else preset["victims"],
        seed=args.seed, labels=args.labels, ig=attack_cfg, preset=args.preset,
        data_dir=args.data_dir, data_source=args.data_source, verify=not args.no_verify,
        progress=not args.no_progress)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ablation",
        description="Gradient inversion on a federated client's updates, reported in the "
                    "layout of the core paper's Table 4.")
    parser.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--attack", default="ig", choices=["ig"])
    parser.add_argument("--victims", type=int, default=None,
                        help="victim images (paper preset: 128; smoke: 8)")
    parser.add_argument("--max-iters", type=int, default=None,
                        help="attack iterations per victim (paper preset: 20000)")
    parser.add_argument("--tv-weight", type=float, default=None,
                        help="total-variation weight (default 0.01, the paper's)")
    parser.add_argument("--lr", type=float, default=None, help="attack learning rate (1)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="iterations per compiled chunk (100)")
    parser.add_argument("--labels", default="known", choices=LABEL_MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--data-dir", default=None,
                        help="folder with mnist.npz / cifar10.npz (default $JGI_DATA_DIR)")
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the sha256 check of reference data files")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", default=None,
                        help="output folder (default runs/<model>_<dataset>_<preset>)")
    args = parser.parse_args(argv)
    for flag in ("victims", "max_iters", "chunk_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["--preset=smoke"]
        _print("No flags given: running the quick demo, --preset=smoke (8 MNIST victims, "
               "1,000 iterations). The paper's setting is --preset=paper (128 victims, "
               "20,000 iterations); see --help.")
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as e:
        _print(f"error: {e}")
        return 2
    out = Path(args.out or f"runs/{config.model}_{config.dataset}_{config.preset}")
    _print(f"config: {json.dumps(dataclasses.asdict(config), default=str)}")
    try:
        run(config, out)
    except data.DataError as e:
        _print(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _print(f"\ninterrupted. Finished rows are in {out / 'results.jsonl'}; the running "
               f"attack is checkpointed about every minute under {out / 'checkpoints'}. "
               f"Rerun the same command to resume.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
