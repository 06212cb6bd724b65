"""Attack a client's defended updates and report privacy in the paper's table layout.

    python -m experiments.ablation --model=cnn --dataset=mnist --out=runs/cnn_mnist
    python -m experiments.ablation --defenses=dp,cvb --out=runs/dp_cvb
    python -m experiments.ablation --defenses=all --preset=smoke    # the 24 stacks
    python -m experiments.ablation            # no flags: the quick demo (smoke preset)

Pipeline (core paper, section 5): load the data -> 10 IID clients -> 128 victims from
client 0 -> for every defense stack, each victim's update (batch size 1, one step,
randomly initialised model, the client's own randomness) -> the attack inverts all
victims in parallel -> SSIM/PSNR/MSE/ASR -> one row per stack appended to
``results.jsonl``, ``table.md`` (Table 4 layout) and ``reconstructions.png`` (one
stack: all victims; several stacks: a few victims per stack, like the paper's Fig. 2).

A finished row is never recomputed: rerunning the same command reuses it. An
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

from jgi import data, defenses, figures, fl, metrics, models, results, tables
from jgi.attacks import ATTACKS, STOP_REASONS, AttackCheckpoint, ig, mimic
from jgi.checkpointing import fedavg_checkpoint
from jgi.fl import fedavg
from jgi.attacks.labels import idlg_labels
from jgi.defenses import input_encoding

LABEL_MODES = ("known", "idlg")


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """One ablation run's settings (defaults: the core paper's).

    Attributes:
      model: registry name (``jgi.models.MODELS``).
      model_options: extra options for the model factory, e.g. (("padding", "VALID"),).
      dataset: ``jgi.data.DATASETS`` name.
      stacks: the defense stacks to evaluate, each a tuple of defense names.
      attack: attack name (``jgi.attacks.ATTACKS``; the paper's tables use CDIA).
      victims: number of victim images (paper: 128).
      seed: the first seed; one seed fixes split, victims, model initialisation, the
        clients' randomness, the attack and the federated training.
      seeds: number of seeds (seed, seed + 1, ...); the paper reports 3.
      labels: "known" (paper) or "idlg" (recovered from the classifier gradient).
      dropout_rate, dp, prune_rate: defense settings (paper: 0.25, tau 20 / sigma 1e-4,
        0.5).
      num_clients, val_fraction, victim_client: the federated split (paper: 10, 0.1, 0).
      ig: the attack's hyperparameters.
      fedavg: federated-training settings for the utility columns, or None to skip them.
      privacy: run the attacks (False: utility only).
      preset: the preset the settings came from (recorded only).
      data_dir, data_source, verify: where the data come from.
      progress: show progress bars.
    """

    model: str = "cnn"
    model_options: tuple[tuple[str, Any], ...] = ()
    dataset: str = "mnist"
    stacks: tuple[tuple[str, ...], ...] = ((),)
    attack: str = "cdia"
    victims: int = 128
    seed: int = 0
    seeds: int = 1
    labels: str = "known"
    dropout_rate: float = defenses.stack.PAPER_DROPOUT_RATE
    dp: defenses.DPConfig = defenses.stack.PAPER_DP
    prune_rate: float = defenses.stack.PAPER_PRUNE_FRACTION
    num_clients: int = 10
    val_fraction: float = 0.1
    victim_client: int = 0
    ig: ig.IGConfig = ig.IGConfig()
    fedavg: fedavg.FedAvgConfig | None = None
    privacy: bool = True
    preset: str = "paper"
    data_dir: str | None = None
    data_source: str = "auto"
    verify: bool = True
    progress: bool = True

    def stack(self, names: Sequence[str]) -> defenses.DefenseStack:
        return defenses.from_names(names, dropout=self.dropout_rate, dp=self.dp,
                                   prune=self.prune_rate)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's settings (section 5): 128 victims and the full IG schedule; FedAvg up to
    # 300 rounds with patience 40; 3 seeds. Meant for a GPU.
    "paper": {"victims": 128, "ig": ig.IGConfig(), "fedavg": fedavg.FedAvgConfig(),
              "seeds": 3},
    # A reduced but meaningful scale for 2 CPU cores (the CNN/MNIST 24-row table
    # overnight): 32 victims with the full IG schedule; FedAvg up to 20 rounds with
    # patience 5; one seed.
    "cpu": {"victims": 32, "ig": ig.IGConfig(),
            "fedavg": fedavg.FedAvgConfig(rounds=20, patience=5), "seeds": 1},
    # Minutes on 2 CPU cores: 8 victims, a compressed schedule (plateau after 100
    # iterations, at most 1,000); 2 FedAvg rounds. Reconstructions are recognisable but
    # not converged; accuracies are far from trained.
    "smoke": {"victims": 8, "ig": ig.IGConfig(max_iters=1000, plateau_patience=100,
                                             stop_patience=400, chunk_size=100),
              "fedavg": fedavg.FedAvgConfig(rounds=2, patience=2), "seeds": 1},
}


def _device_description() -> str:
    devices = jax.devices()
    d = devices[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{len(devices)}" + (
        f" ({os.cpu_count()} host cores)" if d.platform == "cpu" else "")


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclasses.dataclass(frozen=True)
class _Victims:
    """The victim set and what the client draws from (shared by every stack)."""

    idx: np.ndarray
    split: fl.FederatedSplit
    originals: np.ndarray  # [0, 1]
    x: jax.Array  # normalised
    y: jax.Array
    pool_x: jax.Array  # the victim client's training images, normalised (input encodings)
    pool_y: jax.Array
    keys: dict


def victim_set(config: AblationConfig, dataset: data.Dataset) -> _Victims:
    """One seed's victims, their client's split and the run's keys (every stack's)."""
    key = jax.random.key(config.seed)
    keys = {name: jax.random.fold_in(key, i) for i, name in
            enumerate(("split", "victims", "model", "attack", "client", "encoding", "fedavg"))}
    split = fl.iid_split(keys["split"], len(dataset.y_train), config.num_clients,
                         config.val_fraction)
    idx = fl.sample_victims(keys["victims"], split, config.victims, config.victim_client)
    pool = split.train_idx[config.victim_client]
    info = dataset.info
    return _Victims(idx=idx, split=split, originals=dataset.x_train[idx],
                    x=jnp.asarray(data.normalize(dataset.x_train[idx], info)),
                    y=jnp.asarray(dataset.y_train[idx]),
                    pool_x=jnp.asarray(data.normalize(dataset.x_train[pool], info)),
                    pool_y=jnp.asarray(dataset.y_train[pool]), keys=keys)


def _identity(config: AblationConfig, dataset: data.Dataset, model: models.Model,
              stack: defenses.DefenseStack, attack: str) -> dict:
    """Everything that decides a row's numbers (and nothing that does not)."""
    return {
        "model": model.describe(), "dataset": config.dataset, "defenses": stack.describe(),
        "attack": attack, "seed": config.seed, "victims": config.victims,
        "labels": config.labels, "num_clients": config.num_clients,
        "val_fraction": config.val_fraction, "victim_client": config.victim_client,
        "attack_config": dataclasses.asdict(config.ig),
        "data": {"source": dataset.source, "n_train": int(len(dataset.y_train))},
    }


def _utility_identity(config: AblationConfig, dataset: data.Dataset, model: models.Model,
                      stack: defenses.DefenseStack) -> dict:
    return {
        "kind": "utility", "model": model.describe(), "dataset": config.dataset,
        "defenses": stack.describe(), "seed": config.seed, "num_clients": config.num_clients,
        "val_fraction": config.val_fraction,
        # How many clients train at once changes memory, not the result.
        "fedavg": {k: v for k, v in dataclasses.asdict(config.fedavg).items()
                   if k != "client_batch"},
        "data": {"source": dataset.source, "n_train": int(len(dataset.y_train)),
                 "n_test": int(len(dataset.y_test))},
    }


def _utility_row(config, dataset, normalized, model, stack, identity, rid, workdir) -> dict:
    """Federated training of the stack's model; one utility row."""
    info = dataset.info
    key = jax.random.fold_in(jax.random.key(config.seed), 6)
    split = fl.iid_split(jax.random.fold_in(jax.random.key(config.seed), 0),
                         len(dataset.y_train), config.num_clients, config.val_fraction)
    cdata = fedavg.client_data(normalized, dataset.y_train, split)
    x_test = jnp.asarray(data.normalize(dataset.x_test, info))
    y_test = jnp.asarray(dataset.y_test)
    fcfg = config.fedavg
    _print(f"fedavg: {config.num_clients} clients x {cdata.y_train.shape[1]} training images, "
           f"up to {fcfg.rounds} rounds (patience {fcfg.patience}), {model.name} ({info.name}), "
           f"defenses {stack.names or 'none'}, device {_device_description()}")
    checkpoint = fedavg_checkpoint(workdir / "checkpoints" / rid)
    result = fedavg.train(model, stack, cdata, x_test, y_test, key, fcfg,
                          progress=(f"fedavg {'+'.join(stack.names) or 'none'}"
                                    if config.progress else False),
                          checkpoint=checkpoint)
    if checkpoint.restored_step is not None:
        _print(f"resumed from the checkpoint after round {checkpoint.restored_step}")
    row = {
        "row_id": rid, "kind": "utility", "model": config.model, "dataset": config.dataset,
        "defenses": stack.names, "attack": None, "seed": config.seed,
        "accuracy": result.accuracy, "final_accuracy": result.final_accuracy,
        "max_accuracy": result.max_accuracy, "best_round": result.best_round,
        "rounds": result.rounds, "stopped_early": result.stopped_early,
        "history": result.history, "wall_seconds": result.wall_seconds,
        "samples_per_second": result.samples_per_second,
        "device": _device_description(), "data_origin": dataset.origin,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {**identity, "preset": config.preset},
    }
    results.append_row(workdir / "results.jsonl", row)
    checkpoint.clear()
    _print(f"        test accuracy {100 * result.accuracy:.2f}% (round {result.best_round} of "
           f"{result.rounds}; final {100 * result.final_accuracy:.2f}%), "
           f"{result.wall_seconds:.0f} s")
    return row


def run(config: AblationConfig, workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """Runs (or reuses) one row per defense stack of ``config``, attacked by ``config.attack``.

    Args:
      config: the :class:`AblationConfig`.
      workdir: output folder for results.jsonl, table.md/.csv, reconstructions.png,
        per-row reconstructions and attack checkpoints.

    Returns:
      The rows, in the order of ``config.stacks``.
    """
    specs = [(config.stack(names), config.attack) for names in config.stacks]
    return run_rows(config, workdir, specs)


def run_rows(config: AblationConfig, workdir: str | os.PathLike,
             specs: Sequence[tuple[defenses.DefenseStack, str]], *,
             write_outputs: bool = True) -> list[dict[str, Any]]:
    """Runs (or reuses) one row per (defense stack, attack name) in ``specs``.

    Every stack and attack is validated before any data are loaded, so a bad
    combination fails in a second, not after an hour of attacks.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.labels not in LABEL_MODES:
        raise ValueError(f"Unknown label mode {config.labels!r}; valid: {', '.join(LABEL_MODES)}.")
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


def _run_jobs(config, workdir: Path, specs, write_outputs: bool) -> list[dict[str, Any]]:
    dataset = data.load(config.dataset, data_dir=config.data_dir, source=config.data_source,
                        verify=config.verify)
    _print(f"data:   {dataset.describe()}")
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
    rows = []
    for n, (seeded, stack, attack) in enumerate(jobs, 1):
        model = models.get(config.model, num_classes=dataset.info.num_classes,
                           **dict(config.model_options), **stack.model_options())
        identity = (_identity(seeded, dataset, model, stack, attack) if attack is not None
                    else _utility_identity(seeded, dataset, model, stack))
        rid = results.row_id(identity)
        existing = [r for r in results.read_rows(workdir / "results.jsonl")
                    if r.get("row_id") == rid]
        what = attack.upper() if attack is not None else "FedAvg utility"
        label = (f"{what} vs {', '.join(stack.names) or 'no defense'}, seed {seeded.seed}")
        if existing:
            _print(f"[{n}/{len(jobs)}] {label}: row {rid} is already in "
                   f"{workdir / 'results.jsonl'}; reusing it.")
            rows.append(existing[-1])
            continue
        _print(f"[{n}/{len(jobs)}] {label}")
        if attack is not None:
            rows.append(_attack_row(seeded, dataset, victim_set(seeded, dataset), model, stack,
                                    attack, identity, rid, workdir))
        else:
            if normalized is None:
                normalized = data.normalize(dataset.x_train, dataset.info)
            rows.append(_utility_row(seeded, dataset, normalized, model, stack, identity, rid,
                                     workdir))
    if write_outputs:
        _write_outputs(workdir, rows)
    return rows


def _attack_row(config, dataset, victims, model, stack, attack, identity, rid,
                workdir) -> dict:
    info = dataset.info
    keys = victims.keys
    params = model.init(keys["model"], info.image_shape)
    randomness = fl.sample_victim_randomness(keys["client"], model, params, stack,
                                             info.image_shape, config.victims)
    x, y_used = victims.x, victims.y
    if stack.encoding is not None:
        mixing = input_encoding.sample_mixing(keys["encoding"], stack.encoding, config.victims,
                                              len(victims.pool_y), info.image_shape)
        nc = info.num_classes
        x, y_used = input_encoding.encode(x, fl.client.one_hot(victims.y, nc), victims.pool_x,
                                          fl.client.one_hot(victims.pool_y, nc), mixing)
    updates = jax.jit(lambda p, xs, ys, r: fl.victim_updates(model, p, xs, ys, r, stack))(
        params, x, y_used, randomness)

    if config.labels == "idlg":
        labels = idlg_labels(updates, model.classifier)
        label_accuracy = float(jnp.mean(labels == victims.y))
        _print(f"labels: recovered with iDLG, {100 * label_accuracy:.1f}% correct")
    else:
        labels, label_accuracy = y_used, None

    cfg = config.ig
    knowledge = ATTACKS[attack](stack)
    _print(f"attack: {attack.upper()} on {config.victims} victims of client "
           f"{config.victim_client}, {model.name} ({info.name}), defenses "
           f"{stack.names or 'none'}, up to {cfg.max_iters} iterations, "
           f"device {_device_description()}")
    checkpoint = AttackCheckpoint(workdir / "checkpoints" / rid)
    result = mimic.reconstruct(
        model, params, updates, labels, keys["attack"], stack, knowledge, cfg,
        input_shape=info.image_shape, bounds=data.input_bounds(info),
        client_noise=randomness.model, client_dp_noise=randomness.dp,
        progress=f"{attack} {'+'.join(stack.names) or 'none'}" if config.progress else False,
        checkpoint=checkpoint)
    if checkpoint.restored_iteration is not None:
        _print(f"resumed from the checkpoint at iteration {checkpoint.restored_iteration}")
    recon = np.clip(data.denormalize(result.best["x"], info), 0.0, 1.0)
    summary = metrics.summarize(victims.originals, recon)

    recon_dir = workdir / "reconstructions"
    recon_dir.mkdir(exist_ok=True)
    np.savez_compressed(recon_dir / f"{rid}.npz", originals=victims.originals,
                        reconstructions=recon, ssim=np.asarray(summary["per_victim_ssim"]),
                        labels=np.asarray(victims.y), victim_indices=victims.idx)
    stop_counts = {name: int(np.sum(result.stop_reason == i))
                   for i, name in enumerate(STOP_REASONS) if np.any(result.stop_reason == i)}
    row = {
        "row_id": rid,
        "model": config.model,
        "dataset": config.dataset,
        "defenses": stack.names,
        "attack": attack,
        "knowledge": dataclasses.asdict(knowledge),
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
        "victim_indices": [int(i) for i in victims.idx],
        "wall_seconds": result.wall_seconds,
        "compile_seconds": result.compile_seconds,
        "device": _device_description(),
        "data_origin": dataset.origin,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {**identity, "preset": config.preset},
        "kind": "attack",
    }
    results.append_row(workdir / "results.jsonl", row)
    checkpoint.clear()
    _print(f"        SSIM {row['ssim_mean']:.3f} (± {row['ssim_std']:.3f}), "
           f"ASR {100 * row['asr']:.2f}%, {row['wall_seconds']:.0f} s")
    return row


def _write_outputs(workdir: Path, rows: list[dict[str, Any]]) -> None:
    all_rows = results.read_rows(workdir / "results.jsonl")
    header = (
        "# Reconstruction results\n\n"
        f"Rows of `{workdir / 'results.jsonl'}`. SSIM: mean (± std) over victims; ASR: share "
        "of victims with SSIM > 0.5. The paper columns are the core paper's Table 4 (CNN, "
        "128 victims, attacked with its CDIA, which equals IG when no defense is used).\n\n")
    results.write_text(workdir / "table.md", header + tables.markdown_table(all_rows))
    results.write_text(workdir / "table.csv", tables.csv_table(all_rows))
    loaded = []
    for row in rows:
        if row.get("kind", "attack") != "attack":
            continue
        npz = workdir / "reconstructions" / f"{row['row_id']}.npz"
        if npz.exists():
            with np.load(npz) as d:
                loaded.append((row, d["originals"], d["reconstructions"], d["ssim"]))
    png = workdir / "reconstructions.png"
    written = [workdir / "results.jsonl", workdir / "table.md", workdir / "table.csv"]
    if loaded:  # a utility-only command leaves an earlier run's figure as it was
        written.append(png)
    if len(loaded) == 1:
        row, originals, recon, ssim = loaded[0]
        title = (f"{row['attack'].upper()} on {row['model']} / {row['dataset']}, defenses: "
                 f"{', '.join(row['defenses']) or 'none'}; SSIM {row['ssim_mean']:.2f}, "
                 f"ASR {100 * row['asr']:.1f}%")
        figures.reconstruction_grid(originals, recon, ssim, png, title=title)
    elif loaded:
        columns = [(figures.stack_label(r["defenses"]), rec, s) for r, _, rec, s in loaded]
        first = loaded[0][0]
        figures.stack_grid(columns, loaded[0][1], png,
                           title=f"{first['attack'].upper()} on {first['model']} / "
                                 f"{first['dataset']}: one column per defense stack")
    _print("")
    _print(tables.markdown_table(rows))
    _print(f"wrote {', '.join(str(p) for p in written)}")


def parse_stacks(spec: str) -> tuple[tuple[str, ...], ...]:
    """``all`` -> the 24 ablation stacks; ``table5`` -> Table 5's; else stacks separated
    by ';', defenses by ',' (``none`` for no defense)."""
    spec = spec.strip()
    if spec == "all":
        return tuple(tuple(s) for s in defenses.ablation_stacks())
    if spec == "table5":
        return tuple(tuple(s) for s in defenses.stack.TABLE5_STACKS)
    return tuple(tuple(defenses.parse_names(part)) for part in spec.split(";"))


def parse_model_options(spec: str | None) -> tuple[tuple[str, Any], ...]:
    """``"padding=VALID,conv_impl=lax"`` -> (("padding", "VALID"), ("conv_impl", "lax")).

    Values that parse as int or float become numbers.
    """
    if not spec:
        return ()
    options = []
    for part in spec.split(","):
        if "=" not in part:
            raise ValueError(f"--model-options expects key=value pairs, got {part!r}.")
        key, value = (p.strip() for p in part.split("=", 1))
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        options.append((key, value))
    return tuple(options)


def build_config(args: argparse.Namespace) -> AblationConfig:
    """Applies the preset, then every flag given explicitly."""
    preset = PRESETS[args.preset]
    attack_cfg: ig.IGConfig = preset["ig"]
    overrides = {k: v for k, v in {
        "max_iters": args.max_iters, "tv_weight": args.tv_weight, "lr": args.lr,
        "chunk_size": args.chunk_size}.items() if v is not None}
    if overrides:
        attack_cfg = dataclasses.replace(attack_cfg, **overrides)
    fed = preset["fedavg"]
    fed_overrides = {k: v for k, v in {"rounds": args.rounds, "patience": args.patience,
                                       "client_batch": args.client_batch}.items()
                     if v is not None}
    if fed_overrides:
        fed = dataclasses.replace(fed, **fed_overrides)
    return AblationConfig(
        model=args.model, model_options=parse_model_options(args.model_options),
        dataset=args.dataset, stacks=parse_stacks(args.defenses),
        seeds=args.seeds if args.seeds is not None else preset["seeds"],
        fedavg=None if args.no_utility else fed, privacy=not args.no_privacy,
        attack=args.attack,
        victims=args.victims if args.victims is not None else preset["victims"],
        seed=args.seed, labels=args.labels, dropout_rate=args.dropout_rate,
        dp=defenses.DPConfig(clip_norm=args.dp_clip, noise_multiplier=args.dp_sigma),
        prune_rate=args.prune_rate, ig=attack_cfg, preset=args.preset,
        data_dir=args.data_dir, data_source=args.data_source, verify=not args.no_verify,
        progress=not args.no_progress)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ablation",
        description="Gradient inversion on a federated client's (defended) updates, "
                    "reported in the layout of the core paper's Table 4.")
    parser.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    parser.add_argument("--model-options", default=None,
                        help="extra model options, e.g. padding=VALID (the authors' CNN layout "
                             "on 32x32 inputs)")
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--defenses", default="none",
                        help="'none', a stack like 'dp,cvb', several stacks separated by "
                             "';', 'all' (the paper's 24) or 'table5'. Defenses: "
                             + ", ".join(defenses.DEFENSE_NAMES))
    parser.add_argument("--attack", default="cdia", choices=list(ATTACKS),
                        help="the attack (default cdia, as in the paper's Table 4; it equals IG "
                             "when no defense or only DP is used)")
    parser.add_argument("--victims", type=int, default=None,
                        help="victim images (paper preset: 128; smoke: 8)")
    parser.add_argument("--max-iters", type=int, default=None,
                        help="attack iterations per victim (paper preset: 20000)")
    parser.add_argument("--tv-weight", type=float, default=None,
                        help="total-variation weight (default 0.01, the paper's)")
    parser.add_argument("--lr", type=float, default=None, help="attack learning rate (1)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="iterations per compiled chunk (100)")
    parser.add_argument("--dropout-rate", type=float, default=defenses.stack.PAPER_DROPOUT_RATE)
    parser.add_argument("--dp-clip", type=float, default=defenses.stack.PAPER_DP.clip_norm,
                        help="DP-SGD clipping norm tau (20)")
    parser.add_argument("--dp-sigma", type=float,
                        default=defenses.stack.PAPER_DP.noise_multiplier,
                        help="DP-SGD noise multiplier sigma (1e-4; Table 1 uses 1e-3)")
    parser.add_argument("--prune-rate", type=float,
                        default=defenses.stack.PAPER_PRUNE_FRACTION,
                        help="gradient pruning fraction (0.5; Table 2 uses 0.9-0.99)")
    parser.add_argument("--labels", default="known", choices=LABEL_MODES)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (paper preset: 3; cpu and smoke: 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="maximum FedAvg rounds (paper: 300; cpu: 20; smoke: 2)")
    parser.add_argument("--patience", type=int, default=None,
                        help="FedAvg early-stopping patience in rounds (paper: 40)")
    parser.add_argument("--client-batch", type=int, default=None,
                        help="FedAvg clients trained at once (default all; fewer need less "
                             "memory, e.g. 1 for ResNet-18 with DP on a small machine)")
    parser.add_argument("--no-utility", action="store_true",
                        help="skip federated training (privacy columns only)")
    parser.add_argument("--no-privacy", action="store_true",
                        help="skip the attacks (accuracy column only)")
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
    if args.no_utility and args.no_privacy:
        parser.error("--no-utility and --no-privacy together leave nothing to run")
    for flag in ("victims", "max_iters", "chunk_size", "seeds", "rounds", "patience",
                 "client_batch"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["--preset=smoke"]
        _print("No flags given: running the quick demo, --preset=smoke (CDIA on 8 MNIST "
               "victims, 1,000 iterations; 2 FedAvg rounds). The paper's setting is "
               "--preset=paper (128 victims, 20,000 iterations, 300 rounds, 3 seeds); a "
               "laptop-sized one is --preset=cpu; see --help.")
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as e:
        _print(f"error: {e}")
        return 2
    out = Path(args.out or f"runs/{config.model}_{config.dataset}_{config.preset}")
    _print(f"config: {json.dumps(dataclasses.asdict(config), default=str)}")
    try:
        with results.sigterm_as_interrupt():
            run(config, out)
    except (data.DataError, ValueError, results.FolderBusyError) as e:
        _print(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _print(f"\ninterrupted. Finished rows are in {out / 'results.jsonl'}; the running "
               f"attack (or FedAvg run, at round ends) is checkpointed about every minute under "
               f"{out / 'checkpoints'}. "
               f"Rerun the same command to resume.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
