"""The leakage study's grid: attacks on a real FedAvg client's update as local data,
batch and epochs grow, measured (the study shows only image grids).

    JGI_DATA_DIR=../shared/data python -m experiments.fedavg_attacks --workdir=runs/grid
    python -m experiments.fedavg_attacks --clients=100,10 --batch=10,50 --epochs=1,2,5 \\
        --attacks=single-step,study,consistent --iters=200 --workdir=runs/grid

Zhu, Huang, Xie, "Privacy attack in federated learning is not easy" (2024), Figs. 18-40:
DLG, IG, DLF (and the others) fail once a client holds more data (fewer clients), trains
with a larger batch or for more local epochs. Each setting here is a real federation
(:mod:`jgi.fl.federation`: ``--train-cap`` training images split IID over K clients
(``--dirichlet=0.5``: the study's non-IID split by class),
20% of each held out, the study's attack-run local training: SGD lr 0.1 decayed x0.95
per round, momentum 0, weight decay 1e-5, E epochs of batch B); at round ``--round``
the server's hook takes client 0's observation ``W_t - W_k`` and every attack of
``--attacks`` (:mod:`jgi.attacks.fedavg_update`) inverts it:

- ``single-step`` and ``study`` are the set-ups the study used (the update as one
  gradient; E full-batch steps on ``--study-dummies`` dummies, 10 by default as in the
  study's scripts, whatever the client's n);
- ``consistent`` simulates the client's real ``E * ceil(n / B)`` minibatch steps on all
  n dummies with its learning-rate schedule; ``dlf`` is DLF (all n images, per-epoch
  copies; the study's local lr for DLF is 0.004: ``--lr=0.004``);
- ``dlg`` and ``idlg`` are the study's DLG (``--study-dummies`` dummies, joint soft
  labels, 300 L-BFGS steps) and iDLG (one dummy, the update's label) matching the update
  as if it were a gradient (``--dlg-scale=mean-gradient``: divided by lr x steps first).

So the grid separates what FedAvg does to the attacks from what the study's set-up
does. Labels: the client's true label multiset, sorted (``--labels=dimitrov``: counts
inferred by Dimitrov et al.'s interpolation); DLG and iDLG recover their own. Scores:
reconstructions matched one-to-one to the client's images (Hungarian on SSIM,
:func:`jgi.metrics.match_by_ssim`); mean SSIM/PSNR over the matched pairs, the label
accuracy (matched pairs whose reconstruction carries its original's label) and the count
error of the labels the attack used (of the label source; of DLG's recovered labels
when it reconstructs all n; empty for iDLG's one dummy). ``<workdir>/grids/`` has one
image grid per row (matched originals above reconstructions), like the study's figures.

Single-gradient baselines run through the same grid: ``--train-cap=125 --clients=10
--batch=10 --epochs=1`` gives client 0 ten images and one local step (one batch-10
gradient, the study's Fig. 7 for IG); ``--train-cap=625 --clients=10 --batch=10
--epochs=10 --lr=0.004`` gives DLF its Fig. 8 client (50 images, batch 10, 10 epochs).

``--grid=axes`` (default) varies one factor at a time from the base setting (the first
value of each list: the study's 100 clients, batch 10, 1 epoch); ``--grid=full`` runs
every combination. Rows go to ``<workdir>/results.jsonl`` (:class:`jgi.results.KeyedRows`,
keyed by every setting), one per (setting, attack), each row's reconstructions to
``<workdir>/reconstructions/``; a rerun skips finished rows, so an interrupted grid
resumes where it stopped. ``<workdir>/table.md`` has the table, ``ssim_curves.png``
SSIM against each varied factor, one line per attack: both take every row of the
workdir at the invocation's scale, so runs with other ``--dlg-scale``, ``--labels`` or
``--seed`` into one workdir add lines and (seeds) error bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, figures, fl, metrics, models, report, results
from jgi.attacks import dlf, dlg, fedavg_update, ig, label_counts, multistep
from jgi.fl import federation

# What one invocation's table and curves may mix: rows that differ only in these.
VARIED_KEYS = ("clients", "batch", "epochs", "attack", "labels", "seed", "dlg_scale")
AXES = ("clients", "batch", "epochs")


@dataclasses.dataclass(frozen=True)
class Setting:
    clients: int
    batch: int
    epochs: int


def settings(clients: Sequence[int], batch: Sequence[int], epochs: Sequence[int],
             grid: str) -> list[Setting]:
    """The settings of the grid: every combination, or one factor at a time from the
    base (first values), the base first and no setting twice."""
    if grid == "full":
        return [Setting(*c) for c in itertools.product(clients, batch, epochs)]
    base = Setting(clients[0], batch[0], epochs[0])
    out = [base]
    for axis, values in zip(AXES, (clients, batch, epochs), strict=True):
        for v in values[1:]:
            s = dataclasses.replace(base, **{axis: v})
            if s not in out:
                out.append(s)
    return out


def _ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise ValueError(f"--{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--{flag} needs integers >= 1, got {text!r}")
    return values


def observe_client(model, dataset, setting: Setting, args, key):
    """Runs the federation up to ``args.round``; client 0's observation and data there."""
    info = dataset.info
    n_train = min(args.train_cap, len(dataset.y_train))
    x_all = data.normalize(dataset.x_train[:n_train], info)
    y_all = dataset.y_train[:n_train]
    k_split, k_fed = jax.random.split(key)
    if args.dirichlet:
        shares = fl.dirichlet_split(k_split, np.asarray(y_all), setting.clients,
                                    beta=args.dirichlet, min_size=2)
    else:
        shares = fl.iid_shares(k_split, n_train, setting.clients)
    clients = federation.clients_from_shares(x_all, y_all, shares)
    local = dataclasses.replace(federation.STUDY_ATTACK_LOCAL, epochs=setting.epochs,
                                batch_size=setting.batch, lr=args.lr)
    if local.steps_per_epoch(len(clients.y_train[0]))[0] < 1:
        raise ValueError(f"client 0 holds {len(clients.y_train[0])} training images, fewer "
                         f"than one batch of {setting.batch}: lower --batch or --clients, or "
                         f"raise --train-cap")
    config = federation.FederationConfig(rounds=args.round + 1, local=local,
                                         attack_clients=(0,), eval_every=args.round + 1,
                                         eval_batch_size=500)
    seen = {}

    def hook(round_index, client, observation, client_data):
        if round_index == args.round:
            seen["obs"], seen["data"] = observation, client_data

    x_test = data.normalize(dataset.x_test[:500], info)
    federation.train(model, clients, x_test, dataset.y_test[:500], k_fed, config,
                     attack=hook)
    return seen["obs"], seen["data"]


def run_setting(model, dataset, setting: Setting, attacks, args, attack_config, key,
                identity_of) -> Iterator[dict]:
    """Observes the setting's client once, then yields one row per attack as it finishes."""
    info = dataset.info
    shape = info.image_shape
    obs, (x, y) = observe_client(model, dataset, setting, args, jax.random.fold_in(key, 0))
    n = obs.num_samples
    obs = multistep.stack_observations([obs])
    y = jnp.asarray(y)[None]
    originals = np.clip(data.denormalize(np.asarray(x), info), 0, 1)
    strangers = np.clip(data.denormalize(np.asarray(dataset.x_test[-n:]), info), 0, 1)
    sorted_labels, count_err = fedavg_update.attack_labels(
        args.labels, model, obs, y, jax.random.fold_in(key, 2),
        num_classes=info.num_classes, input_shape=shape)
    y_true = np.asarray(y[0])
    for name in attacks:
        t0 = time.perf_counter()
        rec = fedavg_update.run(name, model, obs, sorted_labels, jax.random.fold_in(key, 3),
                                attack_config, input_shape=shape,
                                bounds=data.input_bounds(info))
        images = np.clip(data.denormalize(rec.images[0], info), 0, 1)
        seconds = time.perf_counter() - t0
        scores = score(originals, y_true, images, rec.labels[0], info.num_classes)
        row = {**identity_of(setting, name), "num_samples": n,
               "local_steps": obs.local.num_steps(n), "dummies": int(images.shape[0]),
               "ssim_mean": float(scores["ssim"].mean()),
               "ssim_std": float(scores["ssim"].std()),
               "ssim_chance": chance_ssim(strangers, images),
               "psnr_mean": float(scores["psnr"].mean()),
               "label_accuracy": scores["label_accuracy"],
               "label_count_error": (scores["count_error"] if rec.recovered_labels
                                     else count_err),
               "recovered_labels": rec.recovered_labels, "seconds": seconds}
        recs = Path(args.workdir) / "reconstructions"
        recs.mkdir(exist_ok=True)
        np.savez_compressed(recs / f"{row_name(row)}.npz", originals=originals,
                            true_labels=y_true, images=images,
                            labels=np.asarray(rec.labels[0]))
        if args.grids:
            grids = Path(args.workdir) / "grids"
            grids.mkdir(exist_ok=True)
            figures.reconstruction_grid(
                originals[scores["rows"]], images[scores["cols"]], scores["ssim"],
                grids / f"{row_name(row)}.png",
                title=f"{name}: K={setting.clients} (n={n}), B={setting.batch}, "
                      f"E={setting.epochs}", max_images=20, columns=10)
        yield row


def row_name(row: dict) -> str:
    """A file name for one row's artefacts, unique over the settings a workdir mixes."""
    name = f"K{row['clients']}_B{row['batch']}_E{row['epochs']}_{row['attack']}"
    if row["attack"] in fedavg_update.GRADIENT_ATTACKS:
        name += f"-{row['dlg_scale']}"
    if row.get("labels", "true") != "true":
        name += f"-labels-{row['labels']}"
    return name + (f"_seed{row['seed']}" if row.get("seed", 0) else "")


def chance_ssim(strangers: np.ndarray, images: np.ndarray) -> float:
    """The row's SSIM by chance: its reconstructions matched (Hungarian on SSIM) to ``n``
    images the client never held (the test set's last ``n``), mean over the pairs.

    What the matching alone scores. Few dummies matched to the best of n originals
    (``study``, DLG's 10, iDLG's 1) pick their most similar digits, and SSIM gives a
    saturated digit-shaped blob in salt-and-pepper noise credit for its shape (iDLG's
    0.449 at PSNR 5 dB); a row reconstructs the client's data only as far as its SSIM
    exceeds this.
    """
    rows, cols, s = metrics.match_by_ssim(strangers, images)
    return float(s[rows, cols].mean())


def score(originals: np.ndarray, true_labels: np.ndarray, images: np.ndarray,
          labels: np.ndarray, num_classes: int) -> dict:
    """One client's scores: its ``m`` reconstructions matched one-to-one to its ``n``
    images (Hungarian on SSIM, the pairs of :func:`jgi.metrics.matched_ssim_psnr`).

    Returns ``rows``/``cols`` (the pairs, original ``rows[k]`` with reconstruction
    ``cols[k]``), their ``ssim`` and ``psnr``, ``label_accuracy`` (pairs whose
    reconstruction's label is its original's) and ``count_error`` of the
    reconstructions' label multiset against the client's (None unless ``m == n``).
    """
    rows, cols, s = metrics.match_by_ssim(originals, images)
    labels = np.asarray(labels)
    count_error = None
    if len(labels) == len(true_labels):
        count_error = float(label_counts.count_error(
            label_counts.counts_of(jnp.asarray(labels), num_classes),
            label_counts.counts_of(jnp.asarray(true_labels), num_classes)))
    return {"rows": rows, "cols": cols, "ssim": s[rows, cols],
            "psnr": metrics.psnr(originals[rows], images[cols]),
            "label_accuracy": float(np.mean(labels[cols] == np.asarray(true_labels)[rows])),
            "count_error": count_error}


def attack_label(row: dict) -> str:
    """The attack's name, marked when DLG/iDLG matched the rescaled update or when an
    attack that is handed label counts got inferred ones (``--labels``)."""
    if row["attack"] in fedavg_update.GRADIENT_ATTACKS:
        if row.get("dlg_scale") == "mean-gradient":
            return f"{row['attack']} (÷ lr·steps)"
        return row["attack"]
    if row.get("labels", "true") != "true":
        return f"{row['attack']} ({row['labels']} counts)"
    return row["attack"]


def table(rows: list[dict]) -> str:
    lines = ["| clients | n (client 0) | B | E | local steps | attack | seed | dummies | SSIM | "
             "SSIM by chance | PSNR (dB) | label acc. | count error | s |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (-r["clients"], r["batch"], r["epochs"],
                                         fedavg_update.ALL_ATTACKS.index(r["attack"]),
                                         attack_label(r), r.get("seed", 0))):
        acc, err = r.get("label_accuracy"), r.get("label_count_error")
        chance = "–" if r.get("ssim_chance") is None else f"{r['ssim_chance']:.3f}"
        lines.append(f"| {r['clients']} | {r['num_samples']} | {r['batch']} | {r['epochs']} | "
                     f"{r['local_steps']} | {attack_label(r)} | {r.get('seed', 0)} | "
                     f"{r['dummies']} | "
                     f"{r['ssim_mean']:.3f} ± {r['ssim_std']:.3f} | {chance} | "
                     f"{r['psnr_mean']:.2f} | "
                     f"{'–' if acc is None else f'{acc:.2f}'} | "
                     f"{'–' if err is None else f'{err:.2f}'} | {r['seconds']:.0f} |")
    return "\n".join(lines)


# The clients axis is shown as what it changes: the images client 0 holds.
X_OF = {"clients": "num_samples", "batch": "batch", "epochs": "epochs"}
X_LABELS = {"clients": "local images n (fewer clients)", "batch": "local batch B",
            "epochs": "local epochs E"}


def curves(rows: list[dict], base: Setting) -> list[tuple[str, dict[str, dict]]]:
    """The curves through the base setting: for each factor with two values or more,
    ``(axis, {line: {x: (ssims, chances)}})``, a line per attack label (DLG scale,
    label source), at each x the rows' SSIMs (one per seed) and SSIMs by chance."""
    panels = []
    for axis in AXES:
        others = [a for a in AXES if a != axis]
        sel = [r for r in rows if all(r[a] == getattr(base, a) for a in others)]
        if len({r[axis] for r in sel}) < 2:
            continue
        lines: dict[str, dict] = {}
        for r in sorted(sel, key=lambda r: (
                fedavg_update.ALL_ATTACKS.index(r["attack"]), attack_label(r))):
            ssims, chances = lines.setdefault(attack_label(r), {}).setdefault(
                r[X_OF[axis]], ([], []))
            ssims.append(r["ssim_mean"])
            if r.get("ssim_chance") is not None:
                chances.append(r["ssim_chance"])
        panels.append((axis, lines))
    return panels


def curve_table(rows: list[dict], base: Setting) -> str:
    """:func:`curves` as markdown, one table per factor: SSIM (mean ± std over seeds
    where several ran) with the SSIM by chance in parentheses."""
    out = []
    for axis, lines in curves(rows, base):
        xs = sorted({x for points in lines.values() for x in points})
        out += [f"{X_LABELS[axis]} | " + " | ".join(lines),
                "---:|" + "|".join("---:" for _ in lines)]
        for x in xs:
            cells = []
            for points in lines.values():
                ssims, chances = points.get(x, ([], []))
                cell = "" if not ssims else f"{np.mean(ssims):.3f}"
                if len(ssims) > 1:
                    cell += f" ± {np.std(ssims):.3f} ({len(ssims)} seeds)"
                if chances:
                    cell += f" ({np.mean(chances):.2f})"
                cells.append(cell)
            out.append(f"{x} | " + " | ".join(cells))
        out.append("")
    return "\n".join(f"| {line} |" if line else "" for line in out)


def plot_curves(rows: list[dict], base: Setting, path: Path) -> bool:
    """SSIM against each factor varied from the base (:func:`curves`), one line per
    attack; where several seeds ran a point, their mean with their standard deviation
    as an error bar; dotted in the line's colour, its SSIM by chance. False when no
    factor has two values."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    panels = curves(rows, base)
    if not panels:
        return False
    fig, axs = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (axis, lines) in zip(axs[0], panels, strict=True):
        for name, points in lines.items():
            xs = sorted(points)
            line = ax.errorbar(xs, [np.mean(points[x][0]) for x in xs],
                               yerr=[np.std(points[x][0]) for x in xs], marker="o",
                               capsize=3, label=name)
            cx = [x for x in xs if points[x][1]]
            if cx:
                ax.plot(cx, [np.mean(points[x][1]) for x in cx], ls=":",
                        color=line.lines[0].get_color(), alpha=0.6)
        ax.set_xscale("log")
        ticks = sorted({x for points in lines.values() for x in points})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel(X_LABELS[axis])
        ax.set_ylabel("SSIM (matched; dotted: by chance)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    handles, names = axs[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(names) - 1) // 5), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--model", default="mlp", choices=sorted(models.MODELS),
                        help="the study's MLP by default (study_cnn: its CNN)")
    parser.add_argument("--train-cap", type=int, default=2000,
                        help="training images split over the clients (the study: all)")
    parser.add_argument("--clients", default="100,10", help="K values (first = base)")
    parser.add_argument("--batch", default="10,50", help="B values (first = base)")
    parser.add_argument("--epochs", default="1,2,5", help="E values (first = base)")
    parser.add_argument("--grid", default="axes", choices=("axes", "full"))
    parser.add_argument("--round", type=int, default=0,
                        help="the round whose update is attacked (0: the first)")
    parser.add_argument("--lr", type=float, default=0.1, help="client SGD learning rate")
    parser.add_argument("--attacks", default="single-step,study,consistent",
                        help="comma-separated: " + ", ".join(
                            a for a in fedavg_update.ALL_ATTACKS if a != "consistent+order"))
    parser.add_argument("--iters", type=int, default=200, help="IG iterations")
    parser.add_argument("--ig-lr", type=float, default=0.1)
    parser.add_argument("--tv", type=float, default=1e-2, help="IG TV weight")
    parser.add_argument("--dlf-iters", type=int, default=400)
    parser.add_argument("--dlg-iters", type=int, default=300,
                        help="DLG/iDLG L-BFGS steps (PyTorch semantics, 20 inner iterations)")
    parser.add_argument("--dlg-scale", default="raw", choices=fedavg_update.DLG_SCALES,
                        help="raw: W_t - W_k as the study's code; mean-gradient: / (lr x steps)")
    parser.add_argument("--no-grids", dest="grids", action="store_false",
                        help="skip the per-row image grids")
    parser.add_argument("--study-dummies", type=int, default=10,
                        help="dummies of the study's set-up (its scripts: 1-10)")
    parser.add_argument("--labels", default="true", choices=("true", "dimitrov"))
    parser.add_argument("--dirichlet", type=float, default=0.0, metavar="BETA",
                        help="non-IID: split by class over the clients ~ Dir(BETA) (the "
                             "study: 0.5); 0 (default): the study's IID split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="runs/fedavg_attacks")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    args = parser.parse_args(argv)
    try:
        attacks = fedavg_update.check_attacks(a for a in args.attacks.split(",") if a)
        if "consistent+order" in attacks:
            raise ValueError("consistent+order (the client's shuffle as an oracle) is in "
                             "experiments.multistep, not in the grid")
        grid = settings(_ints("clients", args.clients), _ints("batch", args.batch),
                        _ints("epochs", args.epochs), args.grid)
        if args.dirichlet < 0:
            raise ValueError(f"--dirichlet must be > 0 (non-IID) or 0 (IID), got "
                             f"{args.dirichlet}")
        if (args.round < 0 or args.train_cap < 1 or
                min(args.iters, args.dlf_iters, args.dlg_iters) < 1):
            raise ValueError("--round must be >= 0 and --train-cap, --iters, --dlf-iters, "
                             "--dlg-iters >= 1")
        if max(s.clients for s in grid) > args.train_cap:
            raise ValueError(f"--train-cap {args.train_cap} is smaller than the largest "
                             f"--clients; every client needs data")
        attack_config = fedavg_update.UpdateAttackConfig(
            ig=ig.IGConfig(max_iters=args.iters, lr=args.ig_lr, tv_weight=args.tv,
                           chunk_size=min(50, args.iters)),
            dlf=dlf.DLFConfig(max_iters=args.dlf_iters),
            dlg=dlg.DLGConfig(max_iters=args.dlg_iters, chunk_size=min(10, args.dlg_iters)),
            study_dummies=args.study_dummies, dlg_scale=args.dlg_scale)
        dataset = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
    except (ValueError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = models.get(args.model)
    key = jax.random.key(args.seed)

    def identity_of(setting: Setting, attack: str) -> dict:
        return {"experiment": "fedavg_attacks", "dataset": args.dataset, "model": args.model,
                "train_cap": args.train_cap, "clients": setting.clients,
                "batch": setting.batch, "epochs": setting.epochs, "round": args.round,
                "attack": attack, "iters": args.iters, "ig_lr": args.ig_lr, "tv": args.tv,
                "dlf_iters": args.dlf_iters, "study_dummies": args.study_dummies,
                "labels": args.labels, "seed": args.seed, "lr": args.lr,
                "dlg_iters": args.dlg_iters, "dlg_scale": args.dlg_scale,
                # IID rows carry no split key (rows from before --dirichlet keep their ids).
                **({"split": f"dirichlet:{args.dirichlet:g}"} if args.dirichlet else {})}

    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "results.jsonl"
    print(f"# {dataset.describe()}\n# model {args.model}; {len(grid)} settings x "
          f"{len(attacks)} attacks; round {args.round}; client lr {args.lr}; IG {args.iters} "
          f"iterations (Adam lr {args.ig_lr}, TV {args.tv}); DLF {args.dlf_iters}; DLG "
          f"{args.dlg_iters} ({args.dlg_scale}); seed {args.seed}; rows in {rows_path}",
          flush=True)
    try:
        with results.lock_workdir(out), results.sigterm_as_interrupt():
            store = results.KeyedRows(rows_path)
            for setting in grid:
                todo = [a for a in attacks if not store.done(identity_of(setting, a))]
                if not todo:
                    continue
                print(f"# K={setting.clients} B={setting.batch} E={setting.epochs}: "
                      f"{', '.join(todo)}", file=sys.stderr, flush=True)
                for row in run_setting(model, dataset, setting, todo, args, attack_config,
                                       key, identity_of):
                    store.add(identity_of(setting, row["attack"]), row)
                    print(f"#   {row['attack']}: SSIM {row['ssim_mean']:.3f}, label acc. "
                          f"{row['label_accuracy']:.2f} ({row['seconds']:.0f} s)",
                          file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"interrupted: finished rows are in {rows_path}; rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # The table and curves take every row of the workdir run at this invocation's scale
    # (data, model, iterations, ...), so runs with other attacks, DLG scales, label
    # sources or seeds into the same workdir add lines and error bars.
    scale = {k: v for k, v in identity_of(grid[0], "").items() if k not in VARIED_KEYS}
    rows = [r for r in store.rows() if r.get("row_id") and
            all(r.get(k) == v for k, v in scale.items())]
    text = table(rows)
    results.write_text(out / "table.md", text + "\n")
    print(text)
    if plot_curves(rows, grid[0], out / "ssim_curves.png"):
        results.write_text(out / "curves.md", curve_table(rows, grid[0]))
        print(f"# curves: {out / 'ssim_curves.png'}, {out / 'curves.md'}")
    report.write_report_safely(out)  # again, with the table and the curves
    return 0


if __name__ == "__main__":
    sys.exit(main())
