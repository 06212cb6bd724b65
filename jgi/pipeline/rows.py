"""The row builders: client updates -> attack -> scores -> row, and FedAvg -> row.

Core paper, section 5: the victims are images of one client of an IID split; each
victim's update is one step on that image (batch size 1) of the randomly initialised
model, with the client's own randomness (:func:`jgi.fl.observe_victims`); the attack
inverts all victims in parallel; SSIM, PSNR, MSE and ASR score it. The utility row
trains the stack's model with FedAvg (:func:`jgi.fl.fedavg.train`), every local step
defended and, for an input encoding, encoded.

Layout (``config.layout``): the rows take the dataset as loaded and put the images they
use into the layout themselves (:func:`jgi.data.layout_images`; for "authors" every
image becomes 32x32x3), so a row's victims, their client's pool, the model's input shape
and its normalisation all follow the one flag.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, defenses, fl, metrics, models, results
from jgi.attacks import ATTACKS, STOP_REASONS, mimic
from jgi.attacks.labels import idlg_labels
from jgi.checkpointing import AttackCheckpoint, fedavg_checkpoint, fedavg_position
from jgi.fl import fedavg
from jgi.pipeline.config import AblationConfig, RunKeys
from jgi.records import AttackRow, UtilityRow


def device_description() -> str:
    devices = jax.devices()
    d = devices[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{len(devices)}" + (
        f" ({os.cpu_count()} host cores)" if d.platform == "cpu" else "")


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclasses.dataclass(frozen=True)
class Victims:
    """The victim set and what its client draws from (shared by every stack)."""

    idx: np.ndarray
    split: fl.FederatedSplit
    originals: np.ndarray  # [0, 1]
    x: jax.Array  # normalised
    y: jax.Array
    pool_x: jax.Array  # the victim client's training images, normalised (input encodings)
    pool_y: jax.Array
    keys: RunKeys


def layout_info(config: AblationConfig, dataset: data.Dataset) -> data.DatasetInfo:
    """The dataset's info in the config's layout (image shape, normalisation)."""
    return data.layout_info(dataset.info, config.layout)


def victim_set(config: AblationConfig, dataset: data.Dataset) -> Victims:
    """One seed's victims, their client's split and the run's keys (every stack's), in
    the config's layout."""
    keys = RunKeys(config.seed)
    split = fl.iid_split(keys.split, len(dataset.y_train), config.num_clients,
                         config.val_fraction)
    idx = fl.sample_victims(keys.victims, split, config.victims, config.victim_client)
    pool = split.train_idx[config.victim_client]
    info = layout_info(config, dataset)
    originals = data.layout_images(dataset.x_train[idx], config.layout)
    pool_images = data.layout_images(dataset.x_train[pool], config.layout)
    return Victims(idx=idx, split=split, originals=originals,
                   x=jnp.asarray(data.normalize(originals, info)),
                   y=jnp.asarray(dataset.y_train[idx]),
                   pool_x=jnp.asarray(data.normalize(pool_images, info)),
                   pool_y=jnp.asarray(dataset.y_train[pool]), keys=keys)


def _with_layout(config: AblationConfig, identity: dict) -> dict:
    """Adds the layout to a row identity, only when it is not "jgi" (older ids hold)."""
    return identity if config.layout == "jgi" else {**identity, "layout": config.layout}


def attack_identity(config: AblationConfig, dataset: data.Dataset, model: models.Model,
                    stack: defenses.DefenseStack, attack: str) -> dict:
    """Everything that decides an attack row's numbers (and nothing that does not)."""
    return _with_layout(config, {
        "model": model.describe(), "dataset": config.dataset, "defenses": stack.describe(),
        "attack": attack, "seed": config.seed, "victims": config.victims,
        "labels": config.labels, "num_clients": config.num_clients,
        "val_fraction": config.val_fraction, "victim_client": config.victim_client,
        "attack_config": dataclasses.asdict(config.ig),
        "data": {"source": dataset.source, "n_train": int(len(dataset.y_train))},
    })


def utility_identity(config: AblationConfig, dataset: data.Dataset, model: models.Model,
                     stack: defenses.DefenseStack) -> dict:
    """Everything that decides a utility row's numbers."""
    identity = {
        "kind": "utility", "model": model.describe(), "dataset": config.dataset,
        "defenses": stack.describe(), "seed": config.seed, "num_clients": config.num_clients,
        "val_fraction": config.val_fraction,
        # How many clients train at once changes memory, not the result.
        "fedavg": {k: v for k, v in dataclasses.asdict(config.fedavg).items()
                   if k != "client_batch"},
        "data": {"source": dataset.source, "n_train": int(len(dataset.y_train)),
                 "n_test": int(len(dataset.y_test))},
    }
    if config.fedavg_data_cap is not None:  # absent without a cap: older row ids hold
        identity["data"]["cap"] = list(config.fedavg_data_cap)
    return _with_layout(config, identity)


def _provenance(config: AblationConfig, dataset: data.Dataset, identity: dict) -> dict:
    """The fields every row records about where and how it was made."""
    return {"device": device_description(), "data_origin": dataset.origin,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": {**identity, "preset": config.preset}}


def _record(workdir: Path, row: AttackRow | UtilityRow, checkpoint) -> None:
    """Appends the finished row to results.jsonl, then drops its checkpoint."""
    results.append_row(workdir / "results.jsonl", row.to_json())
    checkpoint.clear()


def _encoding(stack: defenses.DefenseStack) -> str | None:
    return stack.encoding.kind if stack.encoding is not None else None


def utility_row(config: AblationConfig, dataset: data.Dataset, normalized: np.ndarray,
                model: models.Model, stack: defenses.DefenseStack, identity: dict, rid: str,
                workdir: Path) -> UtilityRow:
    """Federated training of the stack's model; one utility row, appended to results.

    ``normalized`` is the training set normalised in jgi's layout; in another layout it
    is recomputed from ``dataset`` (all training images in that layout: 737 MB of
    float32 for MNIST at 32x32x3).
    """
    info = layout_info(config, dataset)
    if config.layout != "jgi":
        normalized = data.normalize(data.layout_images(dataset.x_train, config.layout), info)
    keys = RunKeys(config.seed)
    split = fl.iid_split(keys.split, len(dataset.y_train), config.num_clients,
                         config.val_fraction)
    x_test, y_test = dataset.x_test, dataset.y_test
    cap_note = ""
    if config.fedavg_data_cap is not None:
        train_cap, val_cap, test_cap = config.fedavg_data_cap
        split = split.capped(train_cap, val_cap)
        x_test, y_test = x_test[:test_cap], y_test[:test_cap]
        cap_note = (f" (capped: at most {train_cap} training and "
                    f"{val_cap} validation images per client, {test_cap} test images)")
    cdata = fedavg.client_data(normalized, dataset.y_train, split)
    x_test = jnp.asarray(data.normalize(data.layout_images(x_test, config.layout), info))
    y_test = jnp.asarray(y_test)
    fcfg = config.fedavg
    say(f"fedavg: {config.num_clients} clients x {cdata.y_train.shape[1]} training images, "
        f"{len(y_test)} test images{cap_note}, up to {fcfg.rounds} rounds (patience "
        f"{fcfg.patience}), {model.name} ({info.name} {info.image_shape}), defenses "
        f"{stack.names or 'none'}, "
        f"device {device_description()}")
    checkpoint = fedavg_checkpoint(workdir / "checkpoints" / rid, config.checkpoint_seconds)
    result = fedavg.train(model, stack, cdata, x_test, y_test, keys.fedavg, fcfg,
                          progress=(f"fedavg {'+'.join(stack.names) or 'none'}"
                                    if config.progress else False),
                          checkpoint=checkpoint, piece_steps=config.fedavg_piece_steps)
    if checkpoint.restored_step is not None:
        say(f"resumed from the checkpoint {fedavg_position(checkpoint.restored_step)}")
    row = UtilityRow(
        row_id=rid, model=config.model, dataset=config.dataset,
        defenses=tuple(stack.names), encoding=_encoding(stack), seed=config.seed,
        layout=config.layout, accuracy=result.accuracy, final_accuracy=result.final_accuracy,
        max_accuracy=result.max_accuracy, best_round=result.best_round,
        rounds=result.rounds, stopped_early=result.stopped_early,
        history=result.history, wall_seconds=result.wall_seconds,
        samples_per_second=result.samples_per_second,
        **_provenance(config, dataset, identity))
    _record(workdir, row, checkpoint)
    say(f"        test accuracy {100 * result.accuracy:.2f}% (round {result.best_round} of "
        f"{result.rounds}; final {100 * result.final_accuracy:.2f}%), "
        f"{result.wall_seconds:.0f} s")
    return row


def attack_row(config: AblationConfig, dataset: data.Dataset, victims: Victims,
               model: models.Model, stack: defenses.DefenseStack, attack: str,
               identity: dict, rid: str, workdir: Path) -> AttackRow:
    """Every victim's update under ``stack``, inverted by ``attack``; one attack row."""
    info = layout_info(config, dataset)
    keys = victims.keys
    params = model.init(keys.model, info.image_shape)
    randomness = fl.sample_victim_randomness(keys.client, model, params, stack,
                                             info.image_shape, config.victims)
    observation, y_used = jax.jit(lambda p, xs, ys, r, pool: fl.observe_victims(
        model, p, xs, ys, r, stack, pool=pool, encoding_key=keys.encoding))(
            params, victims.x, victims.y, randomness, (victims.pool_x, victims.pool_y))

    if config.labels == "idlg":
        labels = idlg_labels(observation.update, model.classifier)
        label_accuracy = float(jnp.mean(labels == victims.y))
        say(f"labels: recovered with iDLG, {100 * label_accuracy:.1f}% correct")
    else:
        labels, label_accuracy = y_used, None

    cfg = config.ig
    knowledge = ATTACKS[attack](stack)
    say(f"attack: {attack.upper()} on {config.victims} victims of client "
        f"{config.victim_client}, {model.name} ({info.name} {info.image_shape}), defenses "
        f"{stack.names or 'none'}, up to {cfg.max_iters} iterations, "
        f"device {device_description()}")
    checkpoint = AttackCheckpoint(workdir / "checkpoints" / rid, config.checkpoint_seconds)
    result = mimic.reconstruct_observation(
        model, observation, labels, keys.attack, stack, knowledge, cfg,
        input_shape=info.image_shape, bounds=data.input_bounds(info),
        client_noise=randomness.model, client_dp_noise=randomness.dp,
        progress=f"{attack} {'+'.join(stack.names) or 'none'}" if config.progress else False,
        checkpoint=checkpoint)
    if checkpoint.restored_iteration is not None:
        say(f"resumed from the checkpoint at iteration {checkpoint.restored_iteration}")
    recon = np.clip(data.denormalize(result.best["x"], info), 0.0, 1.0)
    summary = metrics.summarize(victims.originals, recon, info.mean, info.std)

    recon_dir = workdir / "reconstructions"
    recon_dir.mkdir(exist_ok=True)
    np.savez_compressed(recon_dir / f"{rid}.npz", originals=victims.originals,
                        reconstructions=recon, ssim=np.asarray(summary["per_victim_ssim"]),
                        labels=np.asarray(victims.y), victim_indices=victims.idx)
    stop_counts = {name: int(np.sum(result.stop_reason == i))
                   for i, name in enumerate(STOP_REASONS) if np.any(result.stop_reason == i)}
    row = AttackRow(
        row_id=rid, model=config.model, dataset=config.dataset,
        defenses=tuple(stack.names), encoding=_encoding(stack), attack=attack,
        knowledge=dataclasses.asdict(knowledge), seed=config.seed, n_victims=config.victims,
        layout=config.layout,
        **{k: summary[k] for k in ("ssim_mean", "ssim_std", "psnr_mean", "psnr_std",
                                   "mse_mean", "mse_std", "asr")},
        **{k: tuple(summary[k]) for k in ("per_victim_ssim", "per_victim_psnr",
                                          "per_victim_mse", "per_victim_ssim_authors")},
        **{k: summary[k] for k in ("ssim_authors_mean", "ssim_authors_std", "asr_authors")},
        iterations=tuple(int(i) for i in result.iterations),
        iterations_mean=float(np.mean(result.iterations)),
        stop_reasons=stop_counts,
        best_loss_mean=float(np.mean(result.best_loss)),
        label_accuracy=label_accuracy,
        victim_indices=tuple(int(i) for i in victims.idx),
        wall_seconds=result.wall_seconds, compile_seconds=result.compile_seconds,
        **_provenance(config, dataset, identity))
    _record(workdir, row, checkpoint)
    say(f"        SSIM {row.ssim_mean:.3f} (± {row.ssim_std:.3f}), "
        f"ASR {100 * row.asr:.2f}%; authors' SSIM {row.ssim_authors_mean:.3f}, ASR "
        f"{100 * row.asr_authors:.2f}%; {row.wall_seconds:.0f} s")
    return row
