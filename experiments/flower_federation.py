"""Gradient inversion on a real Flower federation: what its server receives, inverted.

    python -m experiments.flower_federation --workdir runs/flower_federation
    python -m experiments.flower_federation --defenses dropout --attacks ig,cdia
    python -m experiments.flower_federation --samples 4 --epochs 2 --batch-size 2

Starts a local Flower federation (:func:`jgi.integrations.flower.run_federation`:
Flower's gRPC server and ``--client-processes`` client processes on 127.0.0.1):
``--clients`` clients of ``--samples`` MNIST training images each (``jgi.data``: the
files of ``--data-dir`` / ``JGI_DATA_DIR``, else the embedded sample), ``--rounds``
rounds of FedAvg, every client training the jgi model with the jgi defense stack
``--defenses`` in jgi's own local training. The server records every client's result;
the result of client ``--victim-client`` in round ``--victim-round`` is turned into a
:class:`jgi.fl.Observation` and attacked, and so is jgi's own update of the same client
(:func:`jgi.fl.observe`: same images, same global parameters, same key) from the same
starting points, so the two rows differ only in where the update came from.

Attacks (``--attacks``): ``ig`` (Inverting Gradients, cosine distance + TV, signed Adam,
:mod:`jgi.attacks.mimic` with nothing known of the client's randomness) and ``cdia``
(:mod:`jgi.attacks.cdia`: estimates dropout masks / bottleneck eps, reads the pruning
mask) invert a one-image one-step update read as its gradient; on a client with several
images or several local steps ``ig`` is multi-step IG (:mod:`jgi.attacks.multistep`, the
consistent set-up: the client's own local training simulated on as many dummies as it
has images, matched to the originals by the best one-to-one assignment of SSIM), and
``cdia`` is refused. ``auto`` (default): ``ig``, plus ``cdia`` when the stack has
dropout or a bottleneck.

Writes into ``--workdir``: ``results.jsonl`` (one :class:`jgi.records.AttackRow` per
(source, attack), ``config.source`` = "flower" or "jgi"; ``report.html`` beside it),
``flower_table.md`` (this run's table), ``flower_reconstructions.png`` (originals and
each row's reconstructions with their SSIM), ``reconstructions/<row id>.npz`` and
``federation-<id>/`` (spec, client data, the server's records, the processes' logs). A
rerun with the same settings reuses the finished federation's records and the rows
already in ``results.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, defenses, figures, fl, metrics, models, results
from jgi.attacks import ATTACKS, STOP_REASONS, ig, mimic, multistep, runner
from jgi.fl.local import LocalTraining
from jgi.integrations import flower as fw
from jgi.pipeline.rows import device_description
from jgi.records import AttackRow

ATTACK_CHOICES = ("ig", "cdia")
SOURCES = ("flower", "jgi")  # where the attacked update came from


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("runs/flower_federation"),
                   help="output folder (default runs/flower_federation)")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "cifar10"))
    p.add_argument("--data-dir", default=None,
                   help="folder with mnist.npz/cifar10.npz (default: JGI_DATA_DIR, else "
                        "tensorflow-datasets, else the embedded sample)")
    p.add_argument("--source", default="auto", choices=data.SOURCES)
    p.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    p.add_argument("--width", type=_positive(int), default=None,
                   help="hidden width of --model mlp (default 256)")
    p.add_argument("--defenses", default="none",
                   help=f"comma-separated, from {', '.join(defenses.DEFENSE_NAMES)} (paper "
                        "settings), or none")
    p.add_argument("--clients", type=_positive(int), default=4)
    p.add_argument("--rounds", type=_positive(int), default=3)
    p.add_argument("--samples", type=_positive(int), default=1, help="images per client")
    p.add_argument("--epochs", type=_positive(int), default=1, help="local epochs")
    p.add_argument("--batch-size", type=_positive(int), default=None,
                   help="local batch size (default: all of the client's images)")
    p.add_argument("--lr", type=_positive(float), default=0.1, help="local SGD learning rate")
    p.add_argument("--victim-client", type=int, default=0)
    p.add_argument("--victim-round", type=int, default=None,
                   help="Flower round (1-based) of the attacked update (default: the last)")
    p.add_argument("--attacks", default="auto",
                   help="comma-separated from ig, cdia; or auto (ig, plus cdia for a stack "
                        "with dropout or a bottleneck)")
    p.add_argument("--iters", type=_positive(int), default=500, help="attack iterations")
    p.add_argument("--attack-lr", type=_positive(float), default=1.0,
                   help="the attack's Adam learning rate (IG's: 1)")
    p.add_argument("--tv", type=float, default=1e-4, help="total-variation weight")
    p.add_argument("--starts", type=_positive(int), default=2,
                   help="starting points per update (the best-loss one is reported)")
    p.add_argument("--client-processes", type=int, default=None,
                   help="processes hosting the clients (default: one per client)")
    p.add_argument("--timeout", type=_positive(float), default=600.0,
                   help="seconds for the federation; every process is stopped after it")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if not 0 <= args.victim_client < args.clients:
        p.error(f"--victim-client must be in 0..{args.clients - 1}, got {args.victim_client}")
    if args.victim_round is None:
        args.victim_round = args.rounds
    if not 1 <= args.victim_round <= args.rounds:
        p.error(f"--victim-round is Flower's 1-based round, in 1..{args.rounds}; got "
                f"{args.victim_round}")
    if args.client_processes is not None and not 1 <= args.client_processes <= args.clients:
        p.error(f"--client-processes must be in 1..{args.clients}, got "
                f"{args.client_processes}")
    if args.width is not None and args.model != "mlp":
        p.error("--width sets the hidden width of --model mlp only")
    try:
        args.stack = defenses.from_names(args.defenses)
        args.local = LocalTraining(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    except ValueError as e:
        p.error(str(e))
    if args.stack.encoding is not None:
        p.error("--defenses: input encodings (mixup, instahide) mix a client's images with "
                "partners from its pool; this experiment attacks the plain update only")
    one_gradient = args.samples == 1 and args.local.is_single_step(args.samples)
    if args.attacks == "auto":
        wanted = ["ig"] + (["cdia"] if one_gradient and (args.stack.dropout > 0
                                                         or args.stack.bottleneck) else [])
    else:
        wanted = [a.strip().lower() for a in args.attacks.split(",") if a.strip()]
        bad = [a for a in wanted if a not in ATTACK_CHOICES]
        if bad or not wanted:
            p.error(f"--attacks: unknown {bad or 'empty list'}; valid: "
                    f"{', '.join(ATTACK_CHOICES)} or auto")
        if "cdia" in wanted and not one_gradient:
            p.error("--attacks cdia inverts one image's one-step gradient: use --samples 1, "
                    "--epochs 1 and no --batch-size (or ig, which runs multi-step IG here)")
    args.attack_list = wanted
    args.one_gradient = one_gradient
    return args


def client_images(dataset: data.Dataset, args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clients' images ([0, 1]) and labels: a seeded draw from the training set,
    client ``i`` holding images ``i * samples .. (i + 1) * samples - 1`` of it; and the
    images' indices in the training set."""
    n = args.clients * args.samples
    if n > len(dataset.y_train):
        raise SystemExit(f"{args.clients} clients x {args.samples} images need {n} training "
                         f"images; {dataset.describe()}")
    idx = np.random.default_rng(args.seed).permutation(len(dataset.y_train))[:n]
    return dataset.x_train[idx], dataset.y_train[idx], idx


def identity(args, dataset) -> dict:
    return {"experiment": "flower_federation", "dataset": args.dataset, "model": args.model,
            "width": args.width, "defenses": args.stack.describe(), "clients": args.clients,
            "rounds": args.rounds, "samples": args.samples,
            "local": dataclasses.asdict(args.local), "seed": args.seed,
            "data_origin": dataset.origin}


def federation(args, spec, x, y, params, folder: Path) -> fw.FederationResult:
    """Runs the federation into ``folder``, or reuses the records of a finished one."""
    if (folder / "federation.json").exists():
        try:
            records = fw.load_records(folder / "records")
            final = folder / "records" / "final_params.npz"
            wall = json.loads((folder / "federation.json").read_text())["wall_seconds"]
            if len(records) == args.clients * args.rounds and final.exists():
                print(f"federation: reusing the records in {folder} (it took {wall:.1f} s)",
                      flush=True)
                with np.load(final) as f:
                    final_params = tuple(f[f"arr_{i}"] for i in range(len(f.files)))
                return fw.FederationResult(records, final_params, folder, wall)
        except (OSError, ValueError, KeyError) as e:
            print(f"federation: the records in {folder} are unreadable ({e}); rerunning",
                  flush=True)
    if folder.exists():
        shutil.rmtree(folder)  # this experiment's own unfinished federation
    n = args.samples
    clients = [(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]) for i in range(args.clients)]
    print(f"federation: {args.clients} Flower clients ({args.client_processes or args.clients}"
          f" processes) x {args.rounds} rounds, {n} {args.dataset} image(s) each, "
          f"{args.model}, defenses {args.stack.names or 'none'}, logs in {folder}",
          flush=True)
    result = fw.run_federation(spec, clients, params, folder,
                               client_processes=args.client_processes, timeout=args.timeout)
    print(f"federation: finished in {result.wall_seconds:.1f} s, {len(result.records)} client "
          "results recorded", flush=True)
    return result


def matched(originals: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """``recon`` reordered to the originals by the best one-to-one assignment of SSIM."""
    if len(originals) == 1:
        return recon
    rows, cols, _ = metrics.match_by_ssim(originals, recon)
    return recon[cols[np.argsort(rows)]]


def attack(args, model, info, observations, labels, key):
    """Both observations attacked from the same ``--starts`` starting points.

    Returns, per observation, the reconstructions ([0, 1], (starts, n, H, W, C)) and the
    runner's result of all its starts.
    """
    shape = info.image_shape
    s = args.starts
    starts = jax.random.key_data(jax.random.split(key, s))
    config = ig.IGConfig(max_iters=args.iters, lr=args.attack_lr, tv_weight=args.tv)
    bounds = data.input_bounds(info)
    target = jax.tree.map(lambda a, b: jnp.concatenate([jnp.stack([a] * s),
                                                        jnp.stack([b] * s)]),
                          observations[0].update, observations[1].update)
    victims = {"target": target, "init_key": jnp.concatenate([starts, starts])}
    context = {"params": observations[0].params,
               "bounds": tuple(jnp.asarray(b) for b in bounds)}
    if args.one_gradient:
        knowledge = ATTACKS[args.current_attack](args.stack)
        problem = mimic.problem(model, args.stack, knowledge, shape, context["params"],
                                config)
        victims["label"] = jnp.full((2 * s,), labels[0], jnp.int32)
    else:
        knowledge = None
        setup = multistep.consistent_setup(observations[0])
        problem = multistep.problem(model, shape, setup, config)
        victims["label"] = jnp.tile(jnp.asarray(labels, jnp.int32)[None], (2 * s, 1))
        victims["key"] = jnp.zeros((2 * s, *starts.shape[1:]), starts.dtype)
    result = runner.run(fw.same_start(problem), victims, context, jax.random.fold_in(key, 1),
                        config.stopping(), chunk_size=config.chunk_size,
                        progress=f"{args.current_attack} (flower + jgi)")
    x = np.asarray(result.best["x"])
    x = x.reshape(2, s, -1, *shape)
    recon = np.clip(np.asarray(data.denormalize(x, info)), 0.0, 1.0)
    return recon, result, knowledge


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        fw.require_flwr()
    except ImportError as e:
        print(e, file=sys.stderr)
        return 2
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = data.load(args.dataset, data_dir=args.data_dir, source=args.source)
    info = dataset.info
    print(f"data: {dataset.describe()}", flush=True)
    x01, y, idx = client_images(dataset, args)
    x = np.asarray(data.normalize(x01, info), np.float32)

    model_options = (("width", args.width),) if args.width is not None else ()
    spec = fw.FederationSpec(model=args.model, model_options=model_options,
                             defenses=",".join(args.stack.names) or "none", local=args.local,
                             num_clients=args.clients, rounds=args.rounds, seed=args.seed,
                             input_shape=tuple(info.image_shape),
                             round_timeout=args.timeout, connect_timeout=args.timeout)
    model = spec.build_model()
    params = model.init(jax.random.key(args.seed), spec.input_shape)
    ident = identity(args, dataset)
    fid = results.row_id(ident)
    result = federation(args, spec, x, y, params, workdir / f"federation-{fid}")

    # The victim's update as the server received it, and jgi's own for the same client.
    v, n = args.victim_client, args.samples
    record = result.record(round=args.victim_round, partition=v)
    template = spec.template()
    captured = fw.observation(record, template)
    own = fl.observe(model, captured.params, jnp.asarray(x[v * n:(v + 1) * n]),
                     jnp.asarray(y[v * n:(v + 1) * n]),
                     fw.client_key(args.seed, v, record.round_index), spec.stack(),
                     captured.local, round_index=record.round_index)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(captured.update), jax.tree.leaves(own.update), strict=True))
    scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(own.update))
    print(f"victim: client {v}, round {args.victim_round}: the captured update differs from "
          f"jgi's own by at most {diff:.3g} (largest entry {scale:.3g})", flush=True)
    if args.one_gradient:
        observations = [fw.as_gradient(captured), fw.as_gradient(own)]
    else:
        observations = [captured, own]
    originals = x01[v * n:(v + 1) * n]
    labels = y[v * n:(v + 1) * n]

    rows_for_table, columns = [], []
    existing = {r.get("row_id"): r for r in results.read_rows(workdir / "results.jsonl")}
    for name in args.attack_list:
        idents = {source: {**ident, "source": source, "attack": name, "victim_client": v,
                           "victim_round": args.victim_round, "iters": args.iters,
                           "attack_lr": args.attack_lr, "tv": args.tv, "starts": args.starts,
                           "attack_form": "one-step gradient" if args.one_gradient
                           else "multi-step IG (consistent set-up)"}
                  for source in SOURCES}
        rids = {source: results.row_id(i) for source, i in idents.items()}
        recon_path = workdir / "reconstructions" / f"{rids['flower']}.npz"
        if all(rid in existing for rid in rids.values()) and recon_path.exists():
            with np.load(recon_path) as f:
                saved = {source: f[source] for source in SOURCES}
            for source in SOURCES:
                row = existing[rids[source]]
                summary = {k: row[k] for k in ("ssim_mean", "psnr_mean", "per_victim_ssim")}
                rows_for_table.append((source, name, summary, row["best_loss_mean"],
                                       row["wall_seconds"]))
                columns.append((f"{name.upper()} {source}", saved[source],
                                summary["per_victim_ssim"]))
            print(f"{name}: reusing rows {rids['flower']}, {rids['jgi']} of results.jsonl",
                  flush=True)
            continue
        args.current_attack = name
        key = jax.random.fold_in(jax.random.key(args.seed), 1000 + ATTACK_CHOICES.index(name))
        t0 = time.monotonic()
        recon, res, knowledge = attack(args, model, info, observations, labels, key)
        wall = time.monotonic() - t0
        loss = np.asarray(res.best_loss).reshape(2, args.starts)
        kept = {}
        for s_i, source in enumerate(SOURCES):
            best = int(np.argmin(loss[s_i]))
            rec = kept[source] = matched(originals, recon[s_i, best])
            summary = metrics.summarize(originals, rec)
            flat = slice(s_i * args.starts, (s_i + 1) * args.starts)
            stops = np.asarray(res.stop_reason)[flat]
            row = AttackRow(
                row_id=rids[source], model=args.model, dataset=args.dataset,
                defenses=tuple(args.stack.names), attack=name,
                knowledge=dataclasses.asdict(knowledge) if knowledge else {},
                seed=args.seed, n_victims=n,
                **{k: summary[k] for k in ("ssim_mean", "ssim_std", "psnr_mean", "psnr_std",
                                           "mse_mean", "mse_std", "asr")},
                **{k: tuple(summary[k]) for k in ("per_victim_ssim", "per_victim_psnr",
                                                  "per_victim_mse")},
                iterations=tuple(int(i) for i in np.asarray(res.iterations)[flat]),
                iterations_mean=float(np.mean(np.asarray(res.iterations)[flat])),
                stop_reasons={STOP_REASONS[i]: int(np.sum(stops == i))
                              for i in range(len(STOP_REASONS)) if np.any(stops == i)},
                best_loss_mean=float(loss[s_i, best]), label_accuracy=None,
                victim_indices=tuple(int(i) for i in idx[v * n:(v + 1) * n]),
                wall_seconds=wall, compile_seconds=res.compile_seconds,
                device=device_description(), data_origin=dataset.origin,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                config={**idents[source], "update_max_abs_difference": diff,
                        "federation_seconds": result.wall_seconds})
            results.append_row(workdir / "results.jsonl", row.to_json())
            rows_for_table.append((source, name, summary, loss[s_i, best], wall))
            columns.append((f"{name.upper()} {source}", rec, summary["per_victim_ssim"]))
            print(f"{name} on the {source} update: SSIM {summary['ssim_mean']:.3f}, PSNR "
                  f"{summary['psnr_mean']:.2f} dB (best of {args.starts} starts by loss)",
                  flush=True)
        recon_path.parent.mkdir(exist_ok=True)
        np.savez_compressed(recon_path, originals=originals, **kept)

    header = (f"Flower federation: {args.clients} clients x {args.rounds} rounds, "
              f"{args.samples} {args.dataset} image(s) per client, {args.model}, defenses "
              f"{'+'.join(args.stack.names) or 'none'}, local {args.local.epochs} epoch(s) of "
              f"SGD lr {args.local.lr} (batch {args.local.batch_size or 'all'}); victim client "
              f"{v}, round {args.victim_round}; {args.iters} attack iterations, best of "
              f"{args.starts} starts; captured vs jgi's own update: max |difference| "
              f"{diff:.3g}; federation {result.wall_seconds:.1f} s")
    lines = [header, "", "| update | attack | SSIM | PSNR [dB] | best loss | attack time [s] |",
             "|---|---|---|---|---|---|"]
    for source, name, summary, best_loss, wall in rows_for_table:
        lines.append(f"| {source} | {name.upper()} | {summary['ssim_mean']:.3f} | "
                     f"{summary['psnr_mean']:.2f} | {best_loss:.4f} | {wall:.1f} |")
    table = "\n".join(lines) + "\n"
    results.write_text(workdir / "flower_table.md", table)
    figures.stack_grid(columns, originals, workdir / "flower_reconstructions.png",
                       title=f"client {v}, round {args.victim_round}: Flower-captured vs "
                             "jgi's own update", max_victims=min(n, 8))
    print(table)
    print(f"wrote {workdir / 'results.jsonl'}, {workdir / 'flower_table.md'}, "
          f"{workdir / 'flower_reconstructions.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
