"""GradInversion (Yin et al. 2021) against IG on BatchNorm models, at CPU scale.

    JGI_DATA_DIR=../shared/data python -m experiments.gradinversion --workdir=runs/gi
    python -m experiments.gradinversion --models=bn_cnn --batches=4 --iters=200   # quick

For every (model, batch size, method) a row in ``<workdir>/rows.jsonl`` (resumable: a
row already there is skipped), with the mean SSIM and PSNR of ``--victims`` batches of
distinct-label CIFAR-10 training images against their reconstructions, the share of
labels Yin's rule recovered, and the time. Methods:

- ``gradinversion``: :mod:`jgi.attacks.gradinversion` with the BatchNorm running
  statistics (estimated by PyTorch's momentum rule over ``--stat-batches`` batches of 64
  CIFAR-10 *test* images, so the victims' own batches are not in them);
- ``gradinversion_nobn``: the same without the BatchNorm term;
- ``gi_cosine`` / ``gi_cosine_nobn``: GradInversion's regularisers and optimiser with
  IG's cosine gradient distance at weight 1 instead of breaching's Euclidean distance
  at 1e-4 (on the small models here the Euclidean term at 1e-4 is smaller than the
  BatchNorm term: 0.05 vs 0.15 at a random start for ``bn_cnn``, batch 4);
- ``ig``: Inverting Gradients' objective on the whole batch (cosine distance, TV 0.01,
  no BatchNorm term, one group) with the same Adam schedule (not IG's signed Adam).

Labels come from Yin's rule (:func:`jgi.attacks.gradinversion.yin_labels`); each
reconstruction slot is paired with the original of its label (if the rule is wrong for
a slot, that slot is paired with the original whose label it missed, in order).
The models: ``bn_cnn`` (width 16) and ``resnet18_bn`` (full width), untrained
(Kaiming/PyTorch init), on 32x32x3 CIFAR-10. Grids of the last victim go to the workdir.
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
from jgi.attacks import gradinversion as gi
from jgi.fl.client import client_update
from jgi.models import resnet_bn

METHODS = ("gradinversion", "gradinversion_nobn", "gi_cosine", "gi_cosine_nobn", "ig")
MODELS = {"bn_cnn": lambda c: resnet_bn.bn_cnn(c, width=16),
          "resnet18_bn": lambda c: resnet_bn.resnet18_bn(c)}


def method_config(method: str, iters: int, groups: int) -> gi.GradInversionConfig:
    if method == "gradinversion":
        return gi.GradInversionConfig(max_iters=iters, num_groups=groups)
    if method == "gradinversion_nobn":
        return gi.GradInversionConfig(max_iters=iters, num_groups=groups, use_bn_stats=False)
    if method in ("gi_cosine", "gi_cosine_nobn"):
        return gi.GradInversionConfig(max_iters=iters, num_groups=groups, distance="cosine",
                                      grad_scale=1.0, use_bn_stats=method == "gi_cosine")
    if method == "ig":
        return gi.GradInversionConfig(max_iters=iters, num_groups=1, use_bn_stats=False,
                                      distance="cosine", grad_scale=1.0, tv_weight=0.01,
                                      l2_weight=0.0, group_weight=0.0, langevin=0.0)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def distinct_label_batches(y: np.ndarray, victims: int, batch: int, seed: int) -> np.ndarray:
    """Indices (victims, batch) of training images with distinct labels per batch."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(victims):
        classes = rng.choice(int(y.max()) + 1, batch, replace=False)
        out.append([rng.choice(np.flatnonzero(y == c)) for c in classes])
    return np.asarray(out)


def pair_by_label(rec: np.ndarray, rec_labels: np.ndarray, orig_labels: np.ndarray):
    """Order of ``rec`` slots matching the originals' order by label."""
    order, free = [], list(range(len(rec_labels)))
    for lab in orig_labels:
        hit = [i for i in free if rec_labels[i] == lab]
        i = hit[0] if hit else free[0]
        free.remove(i)
        order.append(i)
    return rec[np.asarray(order)]


def run_one(model_name: str, batch: int, method: str, args, ds, cache) -> dict:
    info, shape = ds.info, ds.info.image_shape
    model = MODELS[model_name](info.num_classes)
    if model_name not in cache:
        params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), shape)
        test = data.normalize(ds.x_test[:64 * args.stat_batches], info)
        running = resnet_bn.estimate_running_stats(
            model, params, [test[i * 64:(i + 1) * 64] for i in range(args.stat_batches)])
        cache[model_name] = (params, running)
    params, running = cache[model_name]
    idx = distinct_label_batches(ds.y_train, args.victims, batch, args.seed + batch)
    x01 = ds.x_train[idx]
    x = jnp.asarray(data.normalize(x01, info))
    y = jnp.asarray(ds.y_train[idx])
    updates = jax.jit(jax.vmap(lambda a, b: client_update(model, params, a, b)))(x, y)
    labels = jax.vmap(lambda u: gi.yin_labels(u, model.classifier, batch))(updates)
    config = method_config(method, args.iters, args.groups)
    t0 = time.perf_counter()
    res = gi.reconstruct(model, params, running, updates, labels, jax.random.key(args.seed),
                         config, input_shape=shape, bounds=data.input_bounds(info))
    rec = np.clip(data.denormalize(np.asarray(gi.consensus(res)), info), 0, 1)
    seconds = time.perf_counter() - t0
    lab, ytrue = np.asarray(labels), np.asarray(y)
    rec = np.stack([pair_by_label(rec[v], lab[v], ytrue[v]) for v in range(len(rec))])
    o, r = x01.reshape(-1, *shape), rec.reshape(-1, *shape)
    ssim, psnr = metrics.ssim(o, r), metrics.psnr(o, r)
    label_acc = float(np.mean([len(set(lab[v]) & set(ytrue[v])) / batch
                               for v in range(len(lab))]))
    figures.reconstruction_grid(x01[-1], rec[-1], ssim[-batch:],
                                Path(args.workdir) / f"{model_name}_b{batch}_{method}.png",
                                title=f"{method}, {model_name}, batch {batch}")
    return {"model": model_name, "batch": batch, "method": method, "iters": args.iters,
            "groups": config.num_groups, "victims": args.victims,
            "ssim": float(np.mean(ssim)), "psnr": float(np.mean(psnr)),
            "label_acc": label_acc, "seconds": round(seconds, 1)}


def table(rows) -> str:
    lines = ["| model | batch | method | iters | groups | victims | SSIM | PSNR (dB) | "
             "labels | seconds |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['method']} | {r['iters']} | "
                     f"{r['groups']} | {r['victims']} | {r['ssim']:.3f} | {r['psnr']:.2f} | "
                     f"{r['label_acc']:.2f} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/gradinv/gradinversion")
    p.add_argument("--models", default="bn_cnn,resnet18_bn")
    p.add_argument("--batches", default="1,4,8")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--victims", type=int, default=2)
    p.add_argument("--stat-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ds = data.load("cifar10", data_dir=args.data_dir)
    store = results.KeyedRows(workdir / "rows.jsonl", report=False)
    cache: dict = {}
    for model_name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for method in args.methods.split(","):
                groups = method_config(method, args.iters, args.groups).num_groups
                ident = {"model": model_name, "batch": batch, "method": method,
                         "iters": args.iters, "groups": groups, "victims": args.victims,
                         "stat_batches": args.stat_batches, "seed": args.seed}
                if store.done(ident):
                    continue
                row = store.add(ident, run_one(model_name, batch, method, args, ds, cache))
                print(table([row]).splitlines()[-1], flush=True)
    rows = store.rows()
    text = table(rows)
    (workdir / "table.md").write_text(text + "\n")
    report.write_report_safely(workdir, "rows.jsonl")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
