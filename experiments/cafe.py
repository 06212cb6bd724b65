"""CAFE (Jin et al. 2021) on vertically split MNIST: data-set SSIM/PSNR vs iterations.

    JGI_DATA_DIR=../shared/data python -m experiments.cafe --workdir=runs/cafe
    python -m experiments.cafe --sizes=32 --iterations=200 --every=50     # quick

For every data-set size ``N`` in ``--sizes``: the first ``N`` MNIST training images
(``--victims`` federations over consecutive blocks of ``N``), each image split into
``--parties`` horizontal strips held by different parties, trained by the vertical-FL
harness of :mod:`jgi.attacks.cafe` (batch ``--batch``, SGD lr ``--lr``) for
``--iterations`` iterations while the server runs CAFE. A row per snapshot (every
``--every`` iterations) with the mean SSIM and PSNR of the whole dummy data set against
the originals goes to ``<workdir>/rows.jsonl`` (resumable per size); the table to stdout
and ``<workdir>/table.md``; a grid of the last snapshot of the first federation's first
32 images to ``<workdir>/cafe_N<N>.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, figures, metrics, report, results
from jgi.attacks import cafe


def table(rows) -> str:
    lines = ["| images N | parties | batch | lr decay | iterations | passes per image | SSIM | "
             "PSNR (dB) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['parties']} | {r['batch']} | {r.get('decay', 0.0)} | "
                     f"{r['iteration']} | "
                     f"{r['iteration'] * r['batch'] / r['n']:.0f} | {r['ssim']:.3f} | "
                     f"{r['psnr']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/gradinv/cafe")
    p.add_argument("--sizes", default="64")
    p.add_argument("--parties", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--iterations", type=int, default=800)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--victims", type=int, default=1)
    p.add_argument("--inner-steps", type=int, default=4)
    p.add_argument("--decay", type=float, default=0.0,
                   help="per-row lr decay: lr / sqrt(1 + decay * steps of the row)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ds = data.load("mnist", data_dir=args.data_dir)
    store = results.KeyedRows(workdir / "rows.jsonl", report=False)
    vfl = cafe.VFLConfig(parties=args.parties, batch=args.batch, lr=args.lr,
                         num_classes=ds.info.num_classes)
    config = cafe.CAFEConfig(inner_steps=args.inner_steps, decay=args.decay)
    for n in (int(s) for s in args.sizes.split(",")):
        ident = {"n": n, "parties": args.parties, "batch": args.batch, "lr": args.lr,
                 "iterations": args.iterations, "every": args.every,
                 "victims": args.victims, "inner_steps": args.inner_steps,
                 "decay": args.decay, "seed": args.seed}
        if store.done(ident):
            continue
        x = ds.x_train[:n * args.victims].reshape(args.victims, n, *ds.info.image_shape)
        y = ds.y_train[:n * args.victims].reshape(args.victims, n)
        t0 = time.perf_counter()
        snaps, _ = cafe.run(jnp.asarray(x), jnp.asarray(y), jax.random.key(args.seed),
                            iterations=args.iterations, snapshot_every=args.every,
                            vfl=vfl, config=config)
        seconds = time.perf_counter() - t0
        o = x.reshape(-1, *ds.info.image_shape)
        for i, snap in enumerate(np.asarray(snaps)):
            r = snap.reshape(-1, *ds.info.image_shape)
            s = metrics.ssim(o, r)
            row = {"n": n, "parties": args.parties, "batch": args.batch,
                   "iteration": (i + 1) * args.every, "victims": args.victims,
                   "decay": args.decay,
                   "ssim": float(np.mean(s)), "psnr": float(np.mean(metrics.psnr(o, r))),
                   "seconds": round(seconds, 1)}
            store.add(ident, row)
            print(table([row]).splitlines()[-1], flush=True)
        figures.reconstruction_grid(x[0][:32], np.asarray(snaps[-1, 0])[:32], s[:32],
                                    workdir / f"cafe_N{n}_decay{args.decay}.png",
                                    title=f"CAFE, N={n}, {args.parties} parties, "
                                          f"{args.iterations} iterations", max_images=32)
    text = table(store.rows())
    (workdir / "table.md").write_text(text + "\n")
    report.write_report_safely(workdir, "rows.jsonl")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
