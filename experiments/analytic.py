"""Analytic and malicious-server attacks at CPU scale: a table and image grids.

    JGI_DATA_DIR=../shared/data python -m experiments.analytic --workdir=/tmp/analytic
    python -m experiments.analytic --parts=analytic,rtf --victims=4       # quick
    python -m experiments.analytic --parts=rgap --rgap-size=32            # minutes

Parts (``--parts``, comma separated):

- ``analytic``: Phong et al.'s dense-layer recovery on the MLP (``jgi.attacks.analytic``)
  for ``--victims`` single images (batch 1: exact) and the batch-1 formula on batches of
  4 (a mixture; each original is paired with the closest of the mixtures).
- ``rtf``: Robbing the Fed (``jgi.attacks.rtf``) on ``imprint+mlp``: the share of
  exactly recovered images against the batch size and the bin count on one gradient,
  through a FedAvg multi-step update (2 local epochs) at two learning rates, and through
  the sum of 10 clients' gradients, at gain 1 and at NotEasy's 1e-3.
- ``training``: one client's local epoch (SGD lr 0.1, batch 32) of the bare backbones
  (``--train-backbones``) and of the same with the imprint block at gain 1e-3 and 1: the
  training loss during and after it (the "blows up" trap).
- ``cpa``: the Cocktail Party Attack (``jgi.attacks.cpa``) on the MLP's first layer, from
  one gradient at batch ``--cpa-batch``, from a 2-epoch FedAvg weight change of the
  same images, and from a FedAvg weight change of a client with 5x more images than
  the attack separates (NotEasy's setting).
- ``rgap``: R-GAP (``jgi.attacks.rgap``) on CNN6 and CNN6-d at ``--rgap-size`` pixels
  (CIFAR-10 crops), with the per-layer rank analysis.

Every row: mean SSIM, median PSNR (capped at 150 dB), mean MSE against the originals
in [0, 1], and the share of "exact" recoveries (PSNR above 60 dB). Grids go to
``--workdir``; the table to stdout and ``<workdir>/analytic.md``.
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

from jgi import data, figures, fl, metrics, models, report
from jgi.attacks import analytic, cpa, rgap, rtf
from jgi.defenses.stack import NO_DEFENSE
from jgi.models import imprint

PARTS = ("analytic", "rtf", "training", "cpa", "rgap")
EXACT_PSNR = 60.0  # dB: MSE below 1e-6 on [0, 1] images


def _row(name: str, setting: str, originals, recovered, extra: str = "") -> dict:
    recovered = np.clip(np.asarray(recovered, np.float32), 0.0, 1.0)
    originals = np.asarray(originals, np.float32)
    s, p, m = (metrics.ssim(originals, recovered), metrics.psnr(originals, recovered),
               metrics.mse(originals, recovered))
    return {"attack": name, "setting": setting, "n": len(originals),
            "ssim": float(np.mean(s)), "psnr": float(np.median(np.minimum(p, 150.0))),
            "mse": float(np.mean(m)), "exact": float(np.mean(p > EXACT_PSNR)), "notes": extra,
            "_ssims": s, "_orig": originals, "_rec": recovered}


def _grid(row: dict, workdir: Path, tag: str) -> None:
    figures.reconstruction_grid(row["_orig"], row["_rec"], row["_ssims"],
                                workdir / f"{tag}.png",
                                title=f"{row['attack']}: {row['setting']}", max_images=32)


def run_analytic(ds, args, workdir):
    info, shape = ds.info, ds.info.image_shape
    model = models.get("mlp", num_classes=info.num_classes)
    params = model.init(jax.random.key(args.seed), shape)
    x01 = ds.x_train[:args.victims]
    x = jnp.asarray(data.normalize(x01, info))
    y = jnp.asarray(ds.y_train[:args.victims])
    single = jax.jit(jax.vmap(lambda xi, yi: fl.client_update(model, params, xi[None],
                                                              yi[None])))(x, y)
    rec = data.denormalize(np.asarray(analytic.recover_victims(model, single, shape)), info)
    rows = [_row("analytic FC", "MLP, batch 1", x01, rec)]
    _grid(rows[-1], workdir, "analytic_batch1")
    n4 = (args.victims // 4) * 4
    if n4:
        xb = x[:n4].reshape(-1, 4, *shape)
        yb = y[:n4].reshape(-1, 4)
        upd = jax.jit(jax.vmap(lambda a, b: fl.client_update(model, params, a, b)))(xb, yb)
        units = jax.vmap(lambda u: analytic.unit_inputs(u["hidden"]))(upd)
        mixes = []
        for v in range(xb.shape[0]):
            cand, active = np.asarray(units[0][v]), np.asarray(units[1][v])
            cand = cand[active]
            for i in range(4):
                d = np.mean((cand - np.asarray(xb[v, i]).reshape(1, -1)) ** 2, axis=1)
                mixes.append(cand[int(np.argmin(d))].reshape(shape))
        rec4 = data.denormalize(np.stack(mixes), info)
        rows.append(_row("analytic FC", "MLP, batch 4, closest unit", x01[:n4], rec4,
                         "best of 256 unit ratios per image (oracle pairing)"))
        _grid(rows[-1], workdir, "analytic_batch4")
    return rows


def _rtf_rows(model, params, ds, x01, x, y, setting, workdir, tag, local=None, clients=1):
    info, shape = ds.info, ds.info.image_shape
    if clients > 1:
        xs, ys = x.reshape(clients, -1, *shape), y.reshape(clients, -1)
        grads = jax.jit(jax.vmap(lambda a, b: fl.client_update(model, params, a, b)))(xs, ys)
        update = jax.tree.map(lambda a: a.sum(0), grads)
    elif local is None:
        update = jax.jit(lambda p: fl.client_update(model, p, x, y))(params)
    else:
        update = jax.jit(lambda p: fl.observe(model, p, x, y, jax.random.key(1),
                                              local=local).update)(params)
    recovery = rtf.recover(update, shape)
    idx, _ = rtf.match(x, recovery)
    rec = data.denormalize(np.asarray(recovery.images)[np.asarray(idx)], info)
    row = _row("RTF", setting, x01, rec, f"{int(recovery.filled.sum())} filled bins")
    if tag:
        _grid(row, workdir, tag)
    return row


def run_rtf(ds, args, workdir):
    info, shape = ds.info, ds.info.image_shape
    mu, sd = imprint.brightness_statistics(data.normalize(ds.x_test[:500], info))
    rows = []
    for bins in args.rtf_bins:
        model = imprint.imprint_model(models.get("mlp", num_classes=info.num_classes), bins,
                                      gain=1.0, brightness_mean=mu, brightness_std=sd)
        params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), shape)
        for batch in args.rtf_batches:
            x01 = ds.x_train[:batch]
            x, y = jnp.asarray(data.normalize(x01, info)), jnp.asarray(ds.y_train[:batch])
            tag = f"rtf_b{batch}_k{bins}" if batch == max(args.rtf_batches) else ""
            rows.append(_rtf_rows(model, params, ds, x01, x, y,
                                  f"imprint+mlp, {bins} bins, batch {batch}, one gradient",
                                  workdir, tag))
    bins, batch = max(args.rtf_bins), max(args.rtf_batches)
    for distribution in args.rtf_laplace * ["laplace"]:
        model = imprint.imprint_model(models.get("mlp", num_classes=info.num_classes), bins,
                                      gain=1.0, distribution=distribution, brightness_mean=mu,
                                      brightness_std=sd)
        params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), shape)
        x01 = ds.x_train[:batch]
        x, y = jnp.asarray(data.normalize(x01, info)), jnp.asarray(ds.y_train[:batch])
        rows.append(_rtf_rows(model, params, ds, x01, x, y,
                              f"imprint+mlp, {bins} bins at Laplace quantiles, batch {batch}, "
                              "one gradient", workdir, ""))
    batch = min(args.rtf_batches)
    x01 = ds.x_train[:batch]
    x, y = jnp.asarray(data.normalize(x01, info)), jnp.asarray(ds.y_train[:batch])
    for gain in args.rtf_gains:
        model = imprint.imprint_model(models.get("mlp", num_classes=info.num_classes), bins,
                                      gain=gain, brightness_mean=mu, brightness_std=sd)
        params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), shape)
        for lr in args.rtf_lrs:
            local = fl.LocalTraining(epochs=2, batch_size=max(batch // 2, 1), lr=lr)
            rows.append(_rtf_rows(model, params, ds, x01, x, y,
                                  f"{bins} bins, batch {batch}, FedAvg 2 epochs x 2 steps SGD "
                                  f"lr {lr:g}, gain {gain:g}", workdir,
                                  f"rtf_fedavg_gain{gain:g}_lr{lr:g}", local=local))
    n = args.rtf_clients * batch
    x01 = ds.x_train[:n]
    x, y = jnp.asarray(data.normalize(x01, info)), jnp.asarray(ds.y_train[:n])
    model = imprint.imprint_model(models.get("mlp", num_classes=info.num_classes), bins,
                                  gain=1.0, brightness_mean=mu, brightness_std=sd)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), shape)
    rows.append(_rtf_rows(model, params, ds, x01, x, y,
                          f"{bins} bins, sum of {args.rtf_clients} clients x batch {batch}",
                          workdir, "rtf_aggregate", clients=args.rtf_clients))
    return rows


def imprint_training_losses(ds, args) -> list[str]:
    """One client's local epoch: mean loss of each bare backbone and with the imprint
    block, and the share of (image, bin) pairs still active after it."""
    info, shape = ds.info, ds.info.image_shape
    n = args.train_samples
    x = jnp.asarray(data.normalize(ds.x_train[:n], info))
    y = jnp.asarray(ds.y_train[:n])
    mu, sd = imprint.brightness_statistics(data.normalize(ds.x_test[:500], info))
    local = fl.LocalTraining(epochs=1, batch_size=32, lr=0.1)
    lines = []
    cases = []
    for backbone in args.train_backbones:
        bare = models.get(backbone, num_classes=info.num_classes)
        cases.append((backbone, bare))
        cases += [(f"imprint+{backbone} gain {g:g}",
                   imprint.imprint_model(bare, 100, g, brightness_mean=mu, brightness_std=sd))
                  for g in (1e-3, 1.0)]
    for label, model in cases:
        params = model.init(jax.random.key(args.seed), shape)
        train = jax.jit(fl.make_local_training(model, NO_DEFENSE, local, shape, n))
        new, _, loss = train(params, local.optimizer_for().init(params), x, y, jax.random.key(2))
        after = float(fl.cross_entropy(model.apply(new, x, {}), y))
        active = "-"
        if "imprint" in new:
            pre = x.reshape(n, -1) @ new["imprint"]["w"] + new["imprint"]["b"]
            active = f"{float(jnp.mean(pre > 0)):.3g}"
        lines.append(f"| {label} | {float(loss):.4g} | {after:.4g} | {active} |")
    return lines


def run_cpa(ds, args, workdir):
    info, shape = ds.info, ds.info.image_shape
    model = models.get("mlp", num_classes=info.num_classes)
    params = model.init(jax.random.key(args.seed), shape)
    b = args.cpa_batch
    x01_all = ds.x_train[:5 * b]
    x_all = jnp.asarray(data.normalize(x01_all, info))
    y_all = jnp.asarray(ds.y_train[:5 * b])
    x01, x, y = x01_all[:b], x_all[:b], y_all[:b]
    config = cpa.CPAConfig(iters=args.cpa_iters, lr=args.cpa_lr)
    grad = jax.jit(lambda p: fl.client_update(model, p, x, y))(params)
    delta = jax.jit(lambda p: fl.observe(
        model, p, x, y, jax.random.key(1),
        local=fl.LocalTraining(epochs=2, batch_size=max(b // 5, 1), lr=0.1)).update)(params)
    # NotEasy's setting: the client holds more images than the attack separates.
    delta_all = jax.jit(lambda p: fl.observe(
        model, p, x_all, y_all, jax.random.key(1),
        local=fl.LocalTraining(epochs=1, batch_size=b, lr=0.1)).update)(params)
    updates = jax.tree.map(lambda *a: jnp.stack(a), grad, delta, delta_all)
    sources, _ = cpa.attack(updates, b, shape, config)
    rows = []
    settings = [(f"MLP-256, batch {b}, one gradient", x01),
                (f"MLP-256, {b} images, FedAvg 2 epochs x 5 steps lr 0.1", x01),
                (f"MLP-256, {5 * b} images, FedAvg 1 epoch x 5 steps lr 0.1, {b} sources",
                 x01_all)]
    for v, (setting, originals) in enumerate(settings):
        img, corr = cpa.align(originals, np.asarray(sources[v]))
        paired = corr > 0
        rows.append(_row("CPA", setting, originals[paired], img[paired],
                         f"mean abs corr {corr[paired].mean():.2f}; {args.cpa_iters} steps lr "
                         f"{args.cpa_lr:g}"))
        _grid(rows[-1], workdir, f"cpa_{('grad', 'fedavg', 'fedavg_more_images')[v]}")
    return rows


def run_rgap(ds, args, workdir):
    size = args.rgap_size
    x01 = np.asarray(ds.x_train[:args.rgap_victims, :size, :size], np.float32)
    shape = x01.shape[1:]
    rows, ranks = [], []
    for name in ("cnn6", "cnn6d"):
        model = models.get(name)
        params = model.init(jax.random.key(args.seed), shape)
        x = jnp.asarray(x01)
        signs = rgap.flipped_signs(model, params, x)
        grads = jax.vmap(lambda a, s, m=model, p=params: rgap.client_gradient(
            m, p, a[None], s[None]))(x, signs)
        t = time.time()
        res = rgap.recover_victims(model, params, grads, signs, shape)
        jax.block_until_ready(res)
        seconds = time.time() - t
        analysis = rgap.rank_analysis(model, shape)
        numeric = np.asarray(res.ranks[0])
        deficient = [r.layer for r in analysis if r.deficient]
        rows.append(_row("R-GAP", f"{name}, {size}x{size} CIFAR-10 crop", x01,
                         np.asarray(res.image),
                         f"rank-deficient: {', '.join(deficient) or 'none'}; "
                         f"{seconds:.0f} s incl. compile"))
        _grid(rows[-1], workdir, f"rgap_{name}")
        for r, num in zip(analysis[:-1], numeric, strict=True):
            ranks.append(f"| {name} | {r.layer} | {r.unknowns} | {r.forward} | {r.gradient} | "
                         f"{r.new_gradient} | {r.bound} | {int(num)} |")
    return rows, ranks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--workdir", default="/tmp/jgi_analytic")
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS),
                        help="analytic, RTF and CPA (R-GAP uses CIFAR-10)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--victims", type=int, default=16)
    parser.add_argument("--rtf-bins", default="32,100")
    parser.add_argument("--rtf-batches", default="8,32,64")
    parser.add_argument("--rtf-clients", type=int, default=10)
    parser.add_argument("--rtf-laplace", type=int, default=1, choices=(0, 1),
                        help="add the row with bins at Laplace quantiles")
    parser.add_argument("--rtf-gains", default="0.001,1", help="FedAvg rows: imprint gains")
    parser.add_argument("--rtf-lrs", default="0.001,0.1", help="FedAvg rows: local SGD lrs")
    parser.add_argument("--train-samples", type=int, default=512)
    parser.add_argument("--train-backbones", default="mlp,cnn")
    parser.add_argument("--cpa-batch", type=int, default=10)
    parser.add_argument("--cpa-iters", type=int, default=2000)
    parser.add_argument("--cpa-lr", type=float, default=5e-2)
    parser.add_argument("--rgap-size", type=int, default=32)
    parser.add_argument("--rgap-victims", type=int, default=1)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; valid: {', '.join(PARTS)}")
    try:
        args.rtf_bins = [int(v) for v in args.rtf_bins.split(",")]
        args.rtf_batches = [int(v) for v in args.rtf_batches.split(",")]
        args.rtf_gains = [float(v) for v in args.rtf_gains.split(",") if v]
        args.rtf_lrs = [float(v) for v in args.rtf_lrs.split(",") if v]
        args.train_backbones = [v for v in args.train_backbones.split(",") if v]
    except ValueError:
        parser.error("--rtf-bins, --rtf-batches, --rtf-gains and --rtf-lrs take "
                     "comma-separated numbers")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        ds = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
        cifar = (data.load("cifar10", data_dir=args.data_dir, source=args.data_source)
                 if "rgap" in parts else None)
    except data.DataError as e:
        print(f"error: {e}")
        return 2
    rows, extra = [], []
    if "analytic" in parts:
        rows += run_analytic(ds, args, workdir)
    if "rtf" in parts:
        rows += run_rtf(ds, args, workdir)
    if "training" in parts:
        extra += ["", f"Imprint training ({ds.info.name}, {args.train_samples} images, one "
                  "local epoch of SGD lr 0.1, batch 32, 100 bins):", "",
                  "| model | mean loss during the epoch | loss after | active bins after |",
                  "|---|---|---|---|",
                  *imprint_training_losses(ds, args)]
    if "cpa" in parts:
        rows += run_cpa(ds, args, workdir)
    if "rgap" in parts:
        rgap_rows, ranks = run_rgap(cifar, args, workdir)
        rows += rgap_rows
        extra += ["", "R-GAP rank analysis (counts; numerical rank of the attack's system at "
                  f"relative tolerance {rgap.RANK_RTOL:g}):", "",
                  "| model | layer | unknowns | forward | gradient | new gradient | bound | "
                  "numerical rank |", "|---|---|---|---|---|---|---|---|", *ranks]
    lines = [f"Data: {ds.describe()}"]
    if rows:
        lines += ["", "| attack | setting | n | SSIM | PSNR (median, dB) | MSE | exact | notes |",
                  "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['setting']} | {r['n']} | {r['ssim']:.3f} | "
                     f"{r['psnr']:.1f} | {r['mse']:.2e} | {r['exact']:.2f} | {r['notes']} |")
    text = "\n".join(lines + extra)
    print(text)
    (workdir / "analytic.md").write_text(text + "\n")
    report.write_report_safely(workdir)  # report.html: analytic.md and the grids
    return 0


if __name__ == "__main__":
    sys.exit(main())
