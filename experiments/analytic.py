"""Analytic and malicious-server attacks at CPU scale: a table and image grids.

    JGI_DATA_DIR=../shared/data python -m experiments.analytic --workdir=/tmp/analytic
    python -m experiments.analytic --parts=analytic,rtf --victims=4       # quick
    python -m experiments.analytic --parts=rgap --rgap-size=32            # minutes

Parts (``--parts``, comma separated):

- ``analytic``: Phong et al.'s dense-layer recovery on the MLP (``jgi.attacks.analytic``)
  for ``--victims`` single images (batch 1: exact) and the batch-1 formula on batches of
  4 (a mixture; each original is paired with the closest of the mixtures).
- ``pure``: an attacker-side rule for the MLP's first-layer units that hold one image
  at batch > 1 (``analytic.pick_pure_units``: a twin ratio, inside the pixel range),
  scored against the ground truth for the batch sizes ``--pure-batches``.
- ``rtf``: Robbing the Fed (``jgi.attacks.rtf``) on ``imprint+mlp``: the share of
  exactly recovered images against the batch size and the bin count on one gradient,
  through a FedAvg multi-step update (2 local epochs) at two learning rates, and through
  the sum of 10 clients' gradients, at gain 1 and at NotEasy's 1e-3.
- ``rtf_cifar``: RTF with ``--rtf-backbones`` (ResNet-18) behind the imprint block on
  CIFAR-10, one gradient at each of ``--rtf-batches``, 100 bins.
- ``fedavg``: the imprint block's cost to FedAvg: test accuracy per round of
  ``--fedavg-backbones`` bare and with it at each of ``--fedavg-gains`` on
  ``--fedavg-dataset`` (a small IID federation, ``--fedavg-clients`` x
  ``--fedavg-images``, ``--fedavg-rounds`` rounds; resumable rows keyed by every
  setting in ``<workdir>/fedavg_rows.jsonl``).
- ``training``: one client's local epoch (SGD lr 0.1, batch 32) of the bare backbones
  (``--train-backbones``) and of the same with the imprint block at gain 1e-3 and 1: the
  training loss during and after it (the "blows up" trap).
- ``cpa``: the Cocktail Party Attack (``jgi.attacks.cpa``) on the MLP's first layer, from
  one gradient at batch ``--cpa-batch``, from a 2-epoch FedAvg weight change of the
  same images, and from a FedAvg weight change of a client with 5x more images than
  the attack separates (NotEasy's setting).
- ``rgap``: R-GAP (``jgi.attacks.rgap``) on CNN6 and CNN6-d at ``--rgap-size`` pixels
  (CIFAR-10 crops), with the per-layer rank analysis.
- ``rgap_batch``: R-GAP on the gradient of a batch: the rank counts against the batch
  size (``--rgap-count-batches``), the attack as stated (one example assumed) on
  ``--rgap-victims`` batches of each size in ``--rgap-batches`` on CNN6 (each result
  paired with the closest batch member, and its distance from any mixture of the
  batch), and the recursion started from the examples' features (an oracle) at
  ``--rgap-oracle-size`` with each layer's numerical rank.

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

from jgi import data, figures, fl, metrics, models, report, results
from jgi.fl import fedavg
from jgi.attacks import analytic, cpa, rgap, rtf
from jgi.defenses.stack import NO_DEFENSE
from jgi.models import imprint

PARTS = ("analytic", "rtf", "training", "cpa", "rgap", "rgap_batch", "pure",
         "rtf_cifar", "fedavg")
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


def run_rtf_cifar(cifar, args, workdir):
    """RTF with each of ``--rtf-backbones`` behind the imprint block on CIFAR-10: the
    share of exact images from one gradient at each of ``--rtf-batches`` (100 bins)."""
    info, shape = cifar.info, cifar.info.image_shape
    mu, sd = imprint.brightness_statistics(data.normalize(cifar.x_test[:500], info))
    bins = max(args.rtf_bins)
    rows = []
    for backbone in args.rtf_backbones:
        model = imprint.imprint_model(models.get(backbone, num_classes=info.num_classes),
                                      bins, gain=1.0, brightness_mean=mu, brightness_std=sd)
        params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), shape)
        for batch in args.rtf_batches:
            x01 = cifar.x_train[:batch]
            x = jnp.asarray(data.normalize(x01, info))
            y = jnp.asarray(cifar.y_train[:batch])
            tag = f"rtf_cifar_{backbone}_b{batch}" if batch == max(args.rtf_batches) else ""
            rows.append(_rtf_rows(model, params, cifar, x01, x, y,
                                  f"imprint+{backbone}, CIFAR-10, {bins} bins, batch {batch}, "
                                  "one gradient", workdir, tag))
    return rows


def imprint_fedavg_accuracy(ds, args, workdir: Path) -> list[str]:
    """FedAvg test accuracy per round of each of ``--fedavg-backbones`` bare and with the
    imprint block (100 bins) at each of ``--fedavg-gains`` on ``ds``: ``--fedavg-clients``
    IID clients of ``--fedavg-images`` training images each, ``--fedavg-rounds`` rounds
    of one local epoch (Adam 1e-3, batch 32: the core paper's client), tested on
    ``--fedavg-test`` test images. Rows go to ``<workdir>/fedavg_rows.jsonl`` keyed by
    every setting, so an interrupted run resumes where it stopped."""
    info, shape = ds.info, ds.info.image_shape
    mu, sd = imprint.brightness_statistics(data.normalize(ds.x_test[:500], info))
    n_clients, per = args.fedavg_clients, args.fedavg_images
    n = n_clients * per
    if n > len(ds.x_train):
        raise SystemExit(f"error: --fedavg-clients x --fedavg-images = {n} exceeds the "
                         f"{len(ds.x_train)} training images of {info.name}; lower either.")
    x = data.normalize(ds.x_train[:n], info).reshape(n_clients, per, *shape)
    y = np.asarray(ds.y_train[:n]).reshape(n_clients, per)
    clients = fedavg.ClientData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(x[:, :32]),
                                   jnp.asarray(y[:, :32]))
    x_test = jnp.asarray(data.normalize(ds.x_test[:args.fedavg_test], info))
    y_test = jnp.asarray(ds.y_test[:args.fedavg_test])
    config = fedavg.FedAvgConfig(rounds=args.fedavg_rounds, batch_size=32,
                                    patience=args.fedavg_rounds, eval_batch_size=100)
    store = results.KeyedRows(workdir / "fedavg_rows.jsonl", report=False)
    wanted = []
    for backbone in args.fedavg_backbones:
        bare = models.get(backbone, num_classes=info.num_classes)
        for gain in (None, *args.fedavg_gains):
            ident = {"dataset": info.name, "backbone": backbone, "imprint_gain": gain,
                     "bins": 100, "clients": n_clients, "images": per,
                     "rounds": args.fedavg_rounds, "test": args.fedavg_test,
                     "optimizer": "adam", "lr": config.lr, "batch": 32, "seed": args.seed}
            wanted.append(results.row_id(ident))
            if store.done(ident):
                continue
            model = bare if gain is None else imprint.imprint_model(
                bare, 100, gain, brightness_mean=mu, brightness_std=sd)
            res = fedavg.train(model, NO_DEFENSE, clients, x_test, y_test,
                                  jax.random.key(args.seed), config, progress=False)
            label = backbone if gain is None else f"imprint+{backbone} gain {gain:g}"
            store.add(ident, {"model": label,
                              "test_accuracy": [float(a) for a in
                                                res.history["test_accuracy"]],
                              "train_loss": [float(a) for a in res.history["train_loss"]],
                              "seconds": float(res.wall_seconds)})
    lines = []
    for r in store.rows():
        if r.get("row_id") not in wanted:
            continue
        acc = " / ".join(f"{a:.3f}" for a in r["test_accuracy"])
        loss = " / ".join(f"{a:.3f}" for a in r["train_loss"])
        lines.append(f"| {r['model']} | {acc} | {loss} | {r['seconds']:.0f} |")
    return ["", f"FedAvg with and without the imprint block ({info.name}, {n_clients} IID "
            f"clients x {per} images, {args.fedavg_rounds} rounds of 1 local epoch, Adam "
            f"1e-3, batch 32, 100 bins; {args.fedavg_test} test images):", "",
            "| model | test accuracy per round | mean train loss per round | seconds |",
            "|---|---|---|---|", *lines]


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


def run_pure_units(ds, args, workdir) -> list[str]:
    """The attacker-side rule for the MLP's pure first-layer units at batch > 1
    (``analytic.pick_pure_units``): how many units it picks, how many of them are an
    image of the batch exactly (precision), how many of the batch's images it finds
    (recall), against the share of images that some unit (or two) isolates."""
    info, shape = ds.info, ds.info.image_shape
    model = models.get("mlp", num_classes=info.num_classes)
    params = model.init(jax.random.key(args.seed), shape)
    lo = float((0.0 - info.mean[0]) / info.std[0])
    hi = float((1.0 - info.mean[0]) / info.std[0])
    lines = []
    for b in args.pure_batches:
        n = args.pure_victims * b
        x = jnp.asarray(data.normalize(ds.x_train[:n], info)).reshape(args.pure_victims, b,
                                                                    *shape)
        y = jnp.asarray(ds.y_train[:n]).reshape(args.pure_victims, b)
        upd = jax.jit(jax.vmap(lambda a, c: fl.client_update(model, params, a, c)))(x, y)
        inputs, picked = jax.jit(jax.vmap(lambda u: analytic.pick_pure_units(
            u["hidden"], lower=lo, upper=hi)))(upd)
        flat = np.asarray(x.reshape(args.pure_victims, b, -1))
        inputs, picked = np.asarray(inputs), np.asarray(picked)
        # ground truth: a unit is pure for image n when only n activates it
        pre = np.einsum("vbi,ih->vbh", flat, np.asarray(params["hidden"]["w"])) + \
            np.asarray(params["hidden"]["b"])
        act = pre > 0
        pure = act & (act.sum(axis=1, keepdims=True) == 1)  # (v, b, units)
        n_pure = pure.sum(axis=2)
        good = found = n_picked = 0
        for v in range(args.pure_victims):
            cand = inputs[v][picked[v]]
            n_picked += len(cand)
            if not len(cand):
                continue
            # [0, 1] MSE of every pick against every image: exact below 1e-6 (60 dB)
            d = np.mean((cand[:, None] - flat[v][None]) ** 2, axis=2) * info.std[0] ** 2
            good += int(np.sum(d.min(axis=1) < 1e-6))
            found += int(np.sum(d.min(axis=0) < 1e-6))
        lines.append(f"| {b} | {args.pure_victims} | {n_picked / args.pure_victims:.2f} | "
                     f"{good / max(n_picked, 1):.3f} | {found / n:.3f} | "
                     f"{np.mean(n_pure >= 1):.3f} | {np.mean(n_pure >= 2):.3f} |")
    return ["", f"Pure first-layer units of the MLP ({info.name}, untrained, one gradient): "
            "the attacker's rule (a twin ratio within relative 1e-5 and inside the pixel range) "
            "against the ground truth:", "",
            "| batch | batches | picked per batch | precision | recall | images with >= 1 "
            "pure unit | with >= 2 |", "|---|---|---|---|---|---|---|", *lines]


def _best_match(originals: np.ndarray, recovered: np.ndarray) -> tuple[np.ndarray, float]:
    """The batch member closest (SSIM) to one recovered image, and how far the
    recovered image is from any mixture of the batch (relative least-squares
    residual; a diagnostic with the ground truth)."""
    rec = np.clip(recovered, 0.0, 1.0)
    s = np.asarray(metrics.ssim(originals, np.broadcast_to(rec, originals.shape)))
    _, resid = analytic.mixture_weights(jnp.asarray(recovered.ravel()),
                                        jnp.asarray(originals.reshape(len(originals), -1)))
    return originals[int(np.argmax(s))], float(resid)


def run_rgap_batch(ds, args, workdir):
    """R-GAP on a batch's gradient: the attack as the paper states it (one example
    assumed) on ``--rgap-victims`` batches of each size in ``--rgap-batches`` at
    ``--rgap-size``, and the recursion started from the examples' features (an
    oracle) at ``--rgap-oracle-size`` with its numerical ranks."""
    size, victims = args.rgap_size, args.rgap_victims
    rows, counts, oracle = [], [], []
    for name in ("cnn6", "cnn6d"):
        model = models.get(name)
        for b in args.rgap_count_batches:
            analysis = rgap.rank_analysis(model, (size, size, 3), b)
            bad = [f"{r.layer} ({r.bound}/{r.unknowns})" for r in analysis if r.deficient]
            counts.append(f"| {name} | {size}x{size} | {b} | {', '.join(bad) or 'none'} |")
    model = models.get("cnn6")
    shape = (size, size, 3)
    params = model.init(jax.random.key(args.seed), shape)
    # one compilation for every batch size: the gradient has the parameters' shapes
    attack = jax.jit(jax.vmap(lambda p, g, s: rgap.recover(model, p, g, s, shape,
                                                           with_ranks=False),
                              in_axes=(None, 0, 0)))
    for b in args.rgap_batches:
        x01 = np.asarray(ds.x_train[:victims * b, :size, :size], np.float32).reshape(
            victims, b, *shape)
        x = jnp.asarray(x01)
        signs = jax.vmap(lambda a: rgap.flipped_signs(model, params, a))(x)
        grads = jax.vmap(lambda a, s: rgap.client_gradient(model, params, a, s))(x, signs)
        # the attacker's one label for the batch: the majority's (ties +1)
        guess = jnp.where(jnp.sum(signs, axis=1) >= 0, 1.0, -1.0)
        t = time.time()
        res = attack(params, grads, guess)
        jax.block_until_ready(res)
        seconds = time.time() - t
        rec = np.asarray(res.image)
        best, resid = zip(*(_best_match(x01[v], rec[v]) for v in range(victims)), strict=True)
        bad = [r.layer for r in rgap.rank_analysis(model, shape, b) if r.deficient]
        rows.append(_row("R-GAP", f"cnn6, {size}x{size} CIFAR-10, batch {b}, one gradient, "
                         "closest batch member", np.stack(best), rec,
                         f"mixture residual {np.mean(resid):.2f}; rank-deficient: "
                         f"{', '.join(bad) or 'none'}; {seconds:.0f} s incl. compile"))
        _grid(rows[-1], workdir, f"rgap_batch{b}")
    osize = args.rgap_oracle_size
    oshape = (osize, osize, 3)
    for name in ("cnn6", "cnn6d"):
        model = models.get(name)
        params = model.init(jax.random.key(args.seed), oshape)
        for b in args.rgap_oracle_batches:
            x01 = np.asarray(ds.x_train[:b, :osize, :osize], np.float32)
            x = jnp.asarray(x01)
            signs = rgap.flipped_signs(model, params, x)
            grad = rgap.client_gradient(model, params, x, signs)
            feats = rgap.features(model, params, x)
            # params as an argument: closed over, XLA constant-folds the scatters (minutes)
            res = jax.jit(lambda p, g, s, f, m=model: rgap.recover_from_features(
                m, p, g, s, f, oshape))(params, grad, signs, feats)
            analysis = rgap.rank_analysis(model, oshape, b)
            numeric = [f"{int(n)}/{a.unknowns}" + ("" if a.bound == a.unknowns else
                                                   f" (bound {a.bound})")
                       for n, a in zip(np.asarray(res.ranks), analysis[:-1], strict=True)]
            err = float(np.mean((np.asarray(res.image) - x01) ** 2))
            oracle.append(f"| {name} | {osize}x{osize} | {b} | {' | '.join(numeric)} | "
                          f"{err:.2e} |")
    lines = ["", "R-GAP at batch > 1: layers whose equations cannot determine their "
             "unknowns (bound/unknowns), given the examples' outputs of the layer:", "",
             "| model | input | batch | rank-deficient layers |", "|---|---|---|---|",
             *counts, "", "R-GAP from the examples' features (oracle start): numerical "
             "rank / unknowns per conv layer, input MSE:", "",
             "| model | input | batch | conv0 | conv1 | conv2 | conv3 | conv4 | conv5 | MSE |",
             "|---|---|---|---|---|---|---|---|---|---|", *oracle]
    return rows, lines


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
    parser.add_argument("--pure-batches", default="2,4,8,16")
    parser.add_argument("--pure-victims", type=int, default=8, help="pure: batches per size")
    parser.add_argument("--rtf-bins", default="32,100")
    parser.add_argument("--rtf-batches", default="8,32,64")
    parser.add_argument("--rtf-clients", type=int, default=10)
    parser.add_argument("--rtf-backbones", default="resnet18", help="rtf_cifar: backbones")
    parser.add_argument("--fedavg-backbones", default="cnn,resnet18")
    parser.add_argument("--fedavg-clients", type=int, default=4)
    parser.add_argument("--fedavg-images", type=int, default=64, help="per client")
    parser.add_argument("--fedavg-rounds", type=int, default=3)
    parser.add_argument("--fedavg-test", type=int, default=200)
    parser.add_argument("--fedavg-dataset", default="cifar10", choices=sorted(data.DATASETS),
                        help="fedavg: the federation's data set")
    parser.add_argument("--fedavg-gains", default="1",
                        help="fedavg: imprint gains (comma separated; NotEasy: 0.001)")
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
    parser.add_argument("--rgap-batches", default="1,2,4",
                        help="rgap_batch: batch sizes of the attack on one gradient")
    parser.add_argument("--rgap-count-batches", default="1,2,4,5,8,13,16",
                        help="rgap_batch: batch sizes of the rank counts")
    parser.add_argument("--rgap-oracle-size", type=int, default=16)
    parser.add_argument("--rgap-oracle-batches", default="1,2,3,4")
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
        args.rtf_backbones = [v for v in args.rtf_backbones.split(",") if v]
        args.fedavg_backbones = [v for v in args.fedavg_backbones.split(",") if v]
        args.fedavg_gains = [float(v) for v in args.fedavg_gains.split(",") if v]
        for key in ("pure_batches", "rgap_batches", "rgap_count_batches", "rgap_oracle_batches"):
            setattr(args, key, [int(v) for v in getattr(args, key).split(",") if v])
    except ValueError:
        parser.error("--rtf-bins, --rtf-batches, --rtf-gains and --rtf-lrs take "
                     "comma-separated numbers")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        ds = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
        cifar = (data.load("cifar10", data_dir=args.data_dir, source=args.data_source)
                 if {"rgap", "rgap_batch", "rtf_cifar"} & set(parts) else None)
        fed_ds = (data.load(args.fedavg_dataset, data_dir=args.data_dir,
                            source=args.data_source) if "fedavg" in parts else None)
    except data.DataError as e:
        print(f"error: {e}")
        return 2
    rows, extra = [], []
    if "analytic" in parts:
        rows += run_analytic(ds, args, workdir)
    if "pure" in parts:
        extra += run_pure_units(ds, args, workdir)
    if "rtf" in parts:
        rows += run_rtf(ds, args, workdir)
    if "rtf_cifar" in parts:
        rows += run_rtf_cifar(cifar, args, workdir)
    if "fedavg" in parts:
        extra += imprint_fedavg_accuracy(fed_ds, args, workdir)
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
    if "rgap_batch" in parts:
        batch_rows, batch_lines = run_rgap_batch(cifar, args, workdir)
        rows += batch_rows
        extra += batch_lines
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
