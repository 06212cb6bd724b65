"""DMGAN (Hitaj et al. 2017) on MNIST: how much of the tracked digit the GAN produces.

    JGI_DATA_DIR=../shared/data python -m experiments.dmgan --workdir=runs/dmgan
    python -m experiments.dmgan --rounds=5 --every=5       # quick

Federation: two honest clients and the adversary, ``--per-client`` MNIST training
images each; honest client 0 (the victim) holds digits 0-4, client 1 and the adversary
hold digits 5-9, so only the victim has the tracked digit (3). The control setting
``no_victim`` removes digit 3 from the victim's data: nobody has it. The shared model is
jgi's CNN with 11 outputs (10 digits + "fake"). Every ``--every`` rounds a row: the
share of 256 generated images that a separately trained MNIST classifier (jgi's CNN, 10
classes, trained here on 10,000 training images; its test accuracy is in the row)
labels as the tracked digit, its mean probability of that digit, and the shared
model's test accuracy over the 10 digits. Rows go to ``<workdir>/rows.jsonl``
(resumable per setting), the table to stdout and ``<workdir>/table.md``, 32 samples of
the last round to ``<workdir>/dmgan_<setting>.png``.

``diversity`` is the per-pixel standard deviation over the 256 samples, averaged over
pixels: near 0 when the generator collapsed to one image. A first run (kept in the
docs) showed why it is needed: a collapsed generator's binary noise pattern made both
the shared model and the separately trained scorer say "3" with p ~ 1 (adversarial
examples transfer between the two CNNs), so the share alone can mislead.

The adversary trains with the honest clients' SGD lr (``--adv-lr``, 0.05), not the 1e-3
of BREADTH.md's table, which at an honest lr of 0.05 leaves the fake class unlearnt.
CPU scale: the generator uses Adam (lr ``--gen-lr``, 2e-3) and ``--gan-steps`` steps
per round instead of the paper's SGD 1e-4 with 10 steps, which needs far more rounds
than a CPU run affords; both are settings of :class:`jgi.attacks.dmgan.DMGANConfig`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, models, report, results
from jgi.attacks import dmgan

SETTINGS = ("victim", "no_victim")


def pick(y: np.ndarray, classes, n: int, rng) -> np.ndarray:
    idx = np.flatnonzero(np.isin(y, classes))
    return rng.choice(idx, n, replace=False)


def scorer(ds, seed: int):
    """jgi's CNN trained on 10,000 MNIST images (SGD 0.05, 1,500 steps of 64)."""
    info = ds.info
    model = models.get("cnn", num_classes=10)
    x = jnp.asarray(data.normalize(ds.x_train[-10000:], info))
    y = jnp.asarray(ds.y_train[-10000:])
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(seed + 7), info.image_shape)
    # Data as arguments, not closed over: XLA would constant-fold 10,000 images.
    params = jax.jit(lambda p, k, a, b: dmgan.local_sgd(model, p, a, b, k, 1500, 64, 0.05))(
        params, jax.random.key(seed + 8), x, y)
    acc = accuracy(model, params, ds, 10)
    return model, params, acc


def accuracy(model, params, ds, classes: int) -> float:
    x = jnp.asarray(data.normalize(ds.x_test[:1000], ds.info))
    logits = jax.jit(lambda p, a: model.apply(p, a, {}))(params, x)[:, :classes]
    return float(np.mean(np.argmax(np.asarray(logits), 1) == ds.y_test[:1000]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="runs/gradinv/dmgan")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--per-client", type=int, default=1000)
    p.add_argument("--gan-steps", type=int, default=50)
    p.add_argument("--gen-lr", type=float, default=2e-3)
    p.add_argument("--adv-lr", type=float, default=0.05,
                   help="the adversary's local SGD lr (default: the honest clients')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ds = data.load("mnist", data_dir=args.data_dir)
    info, shape = ds.info, ds.info.image_shape
    path = workdir / "rows.jsonl"
    done = {r["setting"] for r in results.read_rows(path)}
    config = dmgan.DMGANConfig(gen_optimizer="adam", gen_lr=args.gen_lr,
                               gan_steps=args.gan_steps, adv_lr=args.adv_lr)
    score_model, score_params, score_acc = scorer(ds, args.seed)
    print(f"scoring classifier: test accuracy {score_acc:.3f}", flush=True)
    mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)

    def normalize(x):
        return (x - mean) / std

    model = models.get("cnn", num_classes=11)
    train_x, train_y = ds.x_train[:-10000], ds.y_train[:-10000]
    for setting in args.settings.split(","):
        if setting in done:
            continue
        rng = np.random.default_rng(args.seed)
        victim_classes = [0, 1, 2, 3, 4] if setting == "victim" else [0, 1, 2, 4]
        idx = [pick(train_y, victim_classes, args.per_client, rng),
               pick(train_y, [5, 6, 7, 8, 9], args.per_client, rng)]
        adv = pick(train_y, [5, 6, 7, 8, 9], args.per_client, rng)
        hx = jnp.asarray(data.normalize(train_x[np.stack(idx)], info))
        hy = jnp.asarray(train_y[np.stack(idx)])
        ax, ay = jnp.asarray(data.normalize(train_x[adv], info)), jnp.asarray(train_y[adv])
        key = jax.random.key(args.seed)
        params = jax.jit(model.init, static_argnums=1)(key, shape)
        gparams = dmgan.generator_init(jax.random.key(args.seed + 1), config.latent, shape)
        gopt = config.gen_tx().init(gparams)
        step = jax.jit(lambda p, g, o, k, *xy: dmgan.fedavg_round(
            model, p, g, o, *xy, k, config, normalize, 10))
        z = jax.random.normal(jax.random.key(99), (256, config.latent))
        t0 = time.perf_counter()
        for r in range(1, args.rounds + 1):
            params, gparams, gopt, gloss = step(params, gparams, gopt,
                                                jax.random.fold_in(key, r), hx, hy, ax, ay)
            if r % args.every and r != args.rounds:
                continue
            samples = dmgan.generate(gparams, z, shape)
            probs = jax.nn.softmax(score_model.apply(score_params, normalize(samples), {}))
            probs = np.asarray(probs)
            s01 = np.asarray(samples)
            row = {"setting": setting, "round": r, "tracked": config.tracked_class,
                   "diversity": float(np.mean(np.std(s01, axis=0))),
                   "share_tracked": float(np.mean(np.argmax(probs, 1) ==
                                                  config.tracked_class)),
                   "p_tracked": float(np.mean(probs[:, config.tracked_class])),
                   "gen_loss": float(gloss), "model_acc": accuracy(model, params, ds, 10),
                   "scorer_acc": score_acc, "seconds": round(time.perf_counter() - t0, 1)}
            results.append_row(path, row, report=False)
            print(row, flush=True)
        _grid(np.asarray(samples[:32]), workdir / f"dmgan_{setting}.png",
              f"DMGAN {setting}: round {args.rounds}, tracked digit {config.tracked_class}")
    rows = results.read_rows(path)
    lines = ["| setting | round | share labelled tracked digit | mean p(tracked) | "
             "diversity | shared model acc | scorer acc |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['round']} | {r['share_tracked']:.3f} | "
              f"{r['p_tracked']:.3f} | {r.get('diversity', float('nan')):.3f} | "
              f"{r['model_acc']:.3f} | {r['scorer_acc']:.3f} |" for r in rows]
    text = "\n".join(lines)
    (workdir / "table.md").write_text(text + "\n")
    report.write_report_safely(workdir, "rows.jsonl")
    print(text)
    return 0


def _grid(images: np.ndarray, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 16, figsize=(8, 1.4))
    for ax, im in zip(axes.flat, images, strict=False):
        ax.imshow(im[..., 0], cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle(title, fontsize=7)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
