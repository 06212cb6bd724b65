"""Generative-prior attacks next to IG: single gradients, untrained generator, FedAvg updates.

    JGI_DATA_DIR=/work/shared/data python -m experiments.generative \
        --attack=ggl,ggl-untrained,ig --dataset=mnist --victims=8
    python -m experiments.generative --attack=ggl,ig --grid=1x1x1,8x8x1,8x4x1,8x8x3 \
        --population=20 --generations=50 --ig-iters=200

Victims: ``--victims`` clients, each holding ``n`` random test images (seeded), attacked
against the model at its random initialisation (the study attacks the first rounds).
``--grid`` lists the local trainings as ``n x B x E`` (local samples, batch, epochs):
``1x1x1`` is one image's one-step gradient (the single-gradient baseline: NotEasy Figs.
15, 17 and 47), anything else a FedAvg client's weight change ``W_0 - W_T`` after E
epochs of SGD at ``--lr`` with batch B (:func:`jgi.fl.observe`,
:class:`jgi.fl.LocalTraining`), which every attack treats as one image's gradient, as the
study does (NotEasy Figs. 24, 31, 36, 40).

Attacks (``--attack``):

- ``ggl``: :mod:`jgi.attacks.ggl` with ``--generator`` (default "mnist": the shipped
  weights), ``--population`` x ``--generations`` CMA-ES evaluations (GGL: 50 x 500);
- ``ggl-untrained``: the same with a generator of the same shape at its random
  initialisation (NotEasy Fig. 47: GGL then fails);
- ``ig``: :mod:`jgi.attacks.ig`, ``--ig-iters`` iterations, iDLG's label guess;
- ``gen-sample``: no attack, the generator's image at a random latent: the chance
  level of the best-match SSIM for images of the generator's range (it grows with n,
  since the best of n images is taken);
- ``grnn``, ``gias``: :mod:`jgi.attacks.grnn` / :mod:`jgi.attacks.gias` at their
  defaults except the iteration counts (``--grnn-iters``, ``--gias-iters``), batch 1.

Metric: each reconstruction is compared with every image the client holds, and the row
reports the mean over clients of the best SSIM (and the PSNR of that image): for a
single gradient that is the one image; for a FedAvg client it asks "does the output look
like any of its images". ``label_acc``: the guessed label equals the matched image's.
Rows go to ``<workdir>/results.jsonl`` through :class:`jgi.results.KeyedRows`, keyed by
every setting that determines them; a rerun skips rows already there (resumable). A
table of SSIM per setting and attack is printed and written to ``<workdir>/table.md``;
one grid PNG per row to ``<workdir>/grids``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, fl, metrics, models, report, results
from jgi.attacks import ggl, ig
from jgi.attacks.labels import idlg_labels
from jgi.models import generator as gen

ATTACKS = ("ggl", "ggl-untrained", "ig", "grnn", "gias", "gen-sample")


def parse_grid(text: str) -> list[tuple[int, int, int]]:
    out = []
    for item in text.split(","):
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--grid item {item!r} is not n x B x E (e.g. 8x4x1).")
        out.append(tuple(int(p) for p in parts))
    return out


def observe_clients(model, params, x, y, key, n, batch, epochs, lr):
    """Updates of ``len(x)`` clients holding ``n`` images each (x: (V, n, H, W, C))."""
    if (n, batch, epochs) == (1, 1, 1):
        return fl.victim_updates(model, params, x[:, 0], y[:, 0])
    local = fl.LocalTraining(epochs=epochs, batch_size=batch, lr=lr)

    def one(xi, yi, k):
        return fl.observe(model, params, xi, yi, k, local=local).update
    return jax.jit(jax.vmap(one))(x, y, jax.random.split(key, x.shape[0]))


def run_attack(name, args, model, params, updates, info, key, generator, on_chunk=None):
    """``(images (V, 1, H, W, C) in [0, 1], labels (V,))`` of one attack.

    ``on_chunk``: for GGL, :func:`jgi.attacks.ggl.reconstruct`'s trajectory callback."""
    shape = info.image_shape
    stats = (np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32))
    labels = idlg_labels(updates, model.classifier)
    if name in ("ggl", "ggl-untrained"):
        config = ggl.GGLConfig(population=args.population, generations=args.generations,
                               chunk=min(args.generations, args.chunk),
                               distance=args.ggl_distance)
        spec, g_params = generator
        if name == "ggl-untrained":
            g_params = gen.generator(spec)[0](jax.random.fold_in(key, 99))
        r = ggl.reconstruct(model, params, updates, key, config, generator=(spec, g_params),
                            labels=labels, input_stats=stats, progress=name,
                            on_chunk=None if on_chunk is None
                            else lambda n, z, f: on_chunk(n, z, f, g_params))
        return np.asarray(r.images), np.asarray(r.labels[:, 0])
    if name == "gen-sample":
        spec, g_params = generator
        z = jax.random.normal(key, (labels.shape[0], spec.latent_dim))
        return np.asarray(gen.generator(spec)[1](g_params, z))[:, None], np.asarray(labels)
    if name == "ig":
        config = ig.IGConfig(max_iters=args.ig_iters, stop_patience=args.ig_iters,
                             chunk_size=min(100, args.ig_iters))
        r = ig.reconstruct(model, params, updates, labels, key, config, input_shape=shape,
                           bounds=data.input_bounds(info), progress="ig")
        x = np.asarray(data.denormalize(np.asarray(r.best["x"]), info))
        return np.clip(x, 0, 1)[:, None], np.asarray(labels)
    if name == "grnn":
        from jgi.attacks import grnn  # pylint: disable=g-import-not-at-top
        config = grnn.GRNNConfig(max_iters=args.grnn_iters)
        r = grnn.reconstruct(model, params, updates, key, config, input_shape=shape,
                             normalization=stats, progress="grnn")
        return np.asarray(r.images), np.asarray(r.labels[:, 0])
    if name == "gias":
        from jgi.attacks import gias  # pylint: disable=g-import-not-at-top
        config = gias.GIASConfig(latent_iters=args.gias_iters, param_iters=args.gias_iters,
                                 batch_size=1)
        r = gias.reconstruct(model, params, updates, key, config, input_shape=shape,
                             generator=generator, labels=labels[:, None],
                             normalization=stats, progress="gias")
        return np.asarray(r.images), np.asarray(r.labels[:, 0])
    raise ValueError(f"Unknown attack {name!r}; valid: {', '.join(ATTACKS)}.")


def best_match(x_clients: np.ndarray, y_clients: np.ndarray, recon: np.ndarray,
               labels: np.ndarray) -> dict:
    """Per client, the client image most similar (SSIM) to the one reconstruction."""
    v, n = x_clients.shape[:2]
    rep = np.repeat(recon[:, :1], n, axis=1).reshape(v * n, *recon.shape[2:])
    s = metrics.ssim(x_clients.reshape(v * n, *x_clients.shape[2:]), rep).reshape(v, n)
    p = metrics.psnr(x_clients.reshape(v * n, *x_clients.shape[2:]), rep).reshape(v, n)
    j = s.argmax(1)
    rows = np.arange(v)
    return {"ssim": float(s[rows, j].mean()), "psnr": float(p[rows, j].mean()),
            "ssim_per_victim": [round(float(a), 4) for a in s[rows, j]],
            "label_acc": float(np.mean(labels == y_clients[rows, j])), "matched": j}


def write_curve(stem: Path, curve: list[dict], title: str) -> None:
    """``<stem>.json`` and ``<stem>.png``: mean best-match SSIM against evaluations."""
    import json  # pylint: disable=g-import-not-at-top

    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(curve, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    e = [c["evaluations"] for c in curve]
    ax.plot(e, [c["ssim"] for c in curve], "o-", label="mean")
    per = np.asarray([c["ssim_per_victim"] for c in curve])
    for v in range(per.shape[1]):
        ax.plot(e, per[:, v], lw=0.8, alpha=0.5, label=f"victim {v}")
    ax.set_xlabel("CMA-ES evaluations per victim")
    ax.set_ylabel("best-match SSIM")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)


def save_grid(workdir: Path, name: str, originals, recon, ssims, title: str) -> None:
    """``<workdir>/grids/<name>.png``: each victim's original above its reconstruction."""
    from jgi import figures  # pylint: disable=g-import-not-at-top
    (workdir / "grids").mkdir(parents=True, exist_ok=True)
    figures.reconstruction_grid(originals, recon, ssims, workdir / "grids" / f"{name}.png",
                                title=title)


def write_table(workdir: Path, text: str) -> None:
    """The run's table: ``<workdir>/table.md``, the HTML report refreshed, and stdout."""
    results.write_text(workdir / "table.md", text)
    report.write_report_safely(workdir)
    print(text)


def table(rows: list[dict], attacks: Sequence[str]) -> str:
    settings = sorted({(r["n"], r["batch"], r["epochs"]) for r in rows},
                      key=lambda s: (s[0] * s[2] // s[1], s))
    lines = ["| n x B x E (local steps) | " + " | ".join(attacks) + " |",
             "|---|" + "---:|" * len(attacks)]
    for s in settings:
        cells = []
        for a in attacks:
            hit = [r for r in rows if (r["n"], r["batch"], r["epochs"]) == s
                   and r["attack"] == a]
            cells.append(f"{hit[-1]['ssim']:.3f} / {hit[-1]['psnr']:.1f}" if hit else "-")
        steps = s[2] * -(-s[0] // s[1])
        lines.append(f"| {s[0]}x{s[1]}x{s[2]} ({steps}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\ncells: mean best-match SSIM / PSNR (dB) over clients\n"


def _distance(row: dict) -> str | None:
    """A row's GGL distance; rows written before it was in every GGL identity used the
    default (and carried none)."""
    if not row["attack"].startswith("ggl"):
        return None
    return row.get("ggl_distance") or "layer_l2"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--attack", default="ggl,ggl-untrained,ig")
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument("--data-source", default="auto", choices=data.SOURCES)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="mlp", help="a jgi.models name (default: mlp)")
    p.add_argument("--victims", type=int, default=8)
    p.add_argument("--grid", default="1x1x1", help="local trainings n x B x E, comma list")
    p.add_argument("--lr", type=float, default=0.1, help="local SGD lr (study: 0.1)")
    p.add_argument("--generator", default="mnist", help="shipped name or path")
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--generations", type=int, default=500)
    p.add_argument("--ggl-distance", default="layer_l2", choices=ggl.DISTANCES)
    p.add_argument("--chunk", type=int, default=25,
                   help="GGL generations per compiled call (and per --curve point)")
    p.add_argument("--curve", action="store_true",
                   help="GGL: record the best-match SSIM after every --chunk generations "
                        "(<workdir>/curves/<attack>_<n>x<B>x<E>.json and a PNG)")
    p.add_argument("--ig-iters", type=int, default=4000)
    p.add_argument("--grnn-iters", type=int, default=1000)
    p.add_argument("--gias-iters", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/generative")
    args = p.parse_args(argv)
    attacks = [a for a in args.attack.split(",") if a]
    for a in attacks:
        if a not in ATTACKS:
            p.error(f"unknown attack {a!r}; valid: {', '.join(ATTACKS)}")
    try:
        grid = parse_grid(args.grid)
    except ValueError as e:
        p.error(str(e))
    workdir = Path(args.workdir)
    out = workdir / "results.jsonl"
    ds = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
    info = ds.info
    model = models.get(args.model, num_classes=info.num_classes)
    params = model.init(jax.random.key(args.seed), info.image_shape)
    generator = gen.load_generator(args.generator) if any(
        a in ("ggl", "ggl-untrained", "gias", "gen-sample") for a in attacks) else None
    store = results.KeyedRows(out)
    for n, batch, epochs in grid:
        rng = np.random.default_rng([args.seed, n])
        idx = rng.choice(len(ds.x_test), args.victims * n, replace=False)
        x01 = ds.x_test[idx].reshape(args.victims, n, *info.image_shape)
        y = ds.y_test[idx].reshape(args.victims, n)
        updates = None
        for attack in attacks:
            identity = {"experiment": "generative", "attack": attack,
                        "dataset": args.dataset, "model": args.model,
                        "victims": args.victims, "n": n, "batch": batch, "epochs": epochs,
                        "lr": args.lr, "seed": args.seed,
                        "generator": args.generator if attack != "ig" else None,
                        "budget": {"ggl": [args.population, args.generations],
                                   "ggl-untrained": [args.population, args.generations],
                                   "ig": args.ig_iters, "grnn": args.grnn_iters,
                                   "gias": args.gias_iters, "gen-sample": 0}[attack],
                        "data_source": args.data_source,
                        "ggl_distance": args.ggl_distance if attack.startswith("ggl")
                        else None}
            if store.done(identity):
                continue
            if updates is None:
                xn = jnp.asarray(data.normalize(x01, info))
                updates = observe_clients(model, params, xn, jnp.asarray(y),
                                          jax.random.key(args.seed + 1), n, batch, epochs,
                                          args.lr)
            t0 = time.time()
            curve, on_chunk = [], None
            if args.curve and attack.startswith("ggl"):
                g_apply = gen.generator(generator[0])[1]
                guess = np.asarray(idlg_labels(updates, model.classifier))

                def on_chunk(evals, z, fitness, g_params, curve=curve, t0=t0,
                             g_apply=g_apply, x01=x01, y=y, guess=guess):
                    images = np.asarray(g_apply(g_params, z))[:, None]
                    m = best_match(x01, y, images, guess)
                    curve.append({"evaluations": int(evals), "ssim": m["ssim"],
                                  "psnr": m["psnr"], "ssim_per_victim": m["ssim_per_victim"],
                                  "loss": np.asarray(fitness).tolist(),
                                  "seconds": round(time.time() - t0, 1)})
            recon, labels = run_attack(attack, args, model, params, updates, info,
                                       jax.random.key(args.seed + 2), generator, on_chunk)
            m = best_match(x01, y, recon, labels)
            matched = x01[np.arange(args.victims), m.pop("matched")]
            row = {**identity, **m, "seconds": round(time.time() - t0, 1)}
            if curve:
                row["curve"] = curve
                write_curve(workdir / "curves" / f"{attack}_{n}x{batch}x{epochs}", curve,
                            f"{attack} on {args.model}, {n}x{batch}x{epochs}")
            store.add(identity, row)
            save_grid(workdir, f"{attack}_{n}x{batch}x{epochs}", matched, recon[:, 0],
                      m["ssim_per_victim"],
                      f"{attack}, {n}x{batch}x{epochs}: SSIM {m['ssim']:.3f}")
            print(f"{attack} {n}x{batch}x{epochs}: SSIM {m['ssim']:.3f} PSNR "
                  f"{m['psnr']:.1f} label acc {m['label_acc']:.2f} ({row['seconds']} s)",
                  file=sys.stderr)
    rows = [r for r in store.rows() if r.get("experiment") == "generative"
            and r["model"] == args.model and r["victims"] == args.victims
            and r.get("dataset", "mnist") == args.dataset
            and _distance(r) == (args.ggl_distance if r["attack"].startswith("ggl")
                                 else None)]
    write_table(workdir, table(rows, attacks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
