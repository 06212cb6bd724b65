"""Trains a WGAN-GP generator on MNIST or CIFAR-10 for the generative-prior attacks.

    JGI_DATA_DIR=/work/shared/data python -m experiments.train_generator \
        --dataset=mnist --workdir=runs/gen/mnist --steps=2000
    # CIFAR-10, GGL's generator shape (1.7 M parameters); meant for a GPU:
    JGI_DATA_DIR=/work/shared/data python -m experiments.train_generator \
        --dataset=cifar10 --workdir=runs/gen/cifar10 --steps=100000

WGAN-GP (Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville, "Improved training of
Wasserstein GANs", NeurIPS 2017), their Algorithm 1: ``n_critic = 5`` critic steps per
generator step, gradient-penalty weight ``lambda = 10`` on random interpolates between
real and generated images, Adam with ``alpha = 1e-4``; betas ``(0, 0.9)`` in Algorithm 1,
``(0.5, 0.9)`` in the authors' MNIST and CIFAR-10 DCGAN-style scripts, which is what
this uses by default (``--beta1``). Batch 64 (their scripts; MNIST uses 50). Their
CIFAR-10 runs took 100,000 generator steps (200,000 for the ResNet); the MNIST script
200,000 iterations. jgi's MNIST generator is trained far shorter (a few thousand steps
on a 2-core CPU) and says so in ``docs/results/generative.md``.

The run state (both networks, both Adam states, the PRNG key, the step) is an orbax
checkpoint under ``<workdir>/checkpoints`` written at most every ``--checkpoint-seconds``
and at the end; rerunning the same command resumes from it (interruption loses at most
that much). Every ``--sample-every`` steps a 8x8 grid of samples of fixed latents goes to
``<workdir>/samples/step_<n>.png``. At the end the generator is written to
``<workdir>/generator.msgpack`` (flax msgpack, no pickle) with its sha256 in
``generator.sha256``, and the quality check to ``<workdir>/quality.json``:

Quality check (offline, no FID): a jgi classifier (the MLP, ``--classifier-steps`` Adam
steps on the real training images, its test accuracy reported) labels ``--quality-samples``
generated images: the class histogram (a generator that covers all digits puts ~10% in
each), the mean top-class probability and the fraction above 0.9 (recognisable digits);
and the nearest-real-image distance (RMSE in [0, 1] pixel units to the closest of 10,000
training images) of generated images, beside the same for real test images (what "on the
data manifold" looks like) and for uniform noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi import data, models, results
from jgi.checkpointing import PeriodicCheckpoint
from jgi.fl import client as fl_client
from jgi.models import generator as gen

GP_WEIGHT = 10.0  # Gulrajani et al. Algorithm 1, lambda
N_CRITIC = 5  # Gulrajani et al. Algorithm 1
LR = 1e-4  # Gulrajani et al. Algorithm 1, alpha


def make_train_chunk(spec: gen.GeneratorSpec, x_train: jax.Array, *, batch: int,
                     n_critic: int, gp_weight: float, tx_g, tx_c, chunk: int):
    """``chunk`` generator steps (each after ``n_critic`` critic steps), jitted.

    ``x_train``: real images (N, H, W, C) in [0, 1], closed over (on device).
    """
    _, g_apply = gen.generator(spec)
    _, c_apply = gen.critic(spec)
    n = x_train.shape[0]

    def critic_loss(cp, gp, key, x_train):
        k1, k2, k3 = jax.random.split(key, 3)
        real = x_train[jax.random.randint(k1, (batch,), 0, n)]
        fake = g_apply(gp, jax.random.normal(k2, (batch, spec.latent_dim)))
        eps = jax.random.uniform(k3, (batch, 1, 1, 1))
        mix = eps * real + (1 - eps) * fake

        # The critic scores each image on its own (no normalisation across the batch), so
        # the gradient of the summed scores holds every sample's input gradient.
        grads = jax.grad(lambda m: jnp.sum(c_apply(cp, m)))(mix)
        norms = jnp.sqrt(jnp.sum(grads ** 2, axis=(1, 2, 3)) + 1e-12)
        gp_term = jnp.mean((norms - 1.0) ** 2)
        w_dist = jnp.mean(c_apply(cp, real)) - jnp.mean(c_apply(cp, fake))
        return -w_dist + gp_weight * gp_term, w_dist

    def gen_loss(gp, cp, key):
        fake = g_apply(gp, jax.random.normal(key, (batch, spec.latent_dim)))
        return -jnp.mean(c_apply(cp, fake))

    def step(state, x_train):
        key, kc, kg = jax.random.split(state["key"], 3)

        def critic_step(carry, k):
            cp, cs = carry
            (_, w), g = jax.value_and_grad(critic_loss, has_aux=True)(cp, state["gen"], k, x_train)
            u, cs = tx_c.update(g, cs, cp)
            return (optax.apply_updates(cp, u), cs), w

        (cp, cs), ws = jax.lax.scan(critic_step, (state["crit"], state["crit_opt"]),
                                    jax.random.split(kc, n_critic))
        g_loss, g = jax.value_and_grad(gen_loss)(state["gen"], cp, kg)
        u, gs = tx_g.update(g, state["gen_opt"], state["gen"])
        new = {"gen": optax.apply_updates(state["gen"], u), "gen_opt": gs, "crit": cp,
               "crit_opt": cs, "key": key, "step": state["step"] + 1}
        return new, (ws[-1], g_loss)

    @jax.jit
    def run(state, x_train):
        return jax.lax.scan(lambda s, _: step(s, x_train), state, None, length=chunk)

    return lambda state: run(state, x_train)


def init_state(spec: gen.GeneratorSpec, key: jax.Array, tx_g, tx_c) -> dict:
    kg, kc, kk = jax.random.split(key, 3)
    g_init, _ = gen.generator(spec)
    c_init, _ = gen.critic(spec)
    gp, cp = g_init(kg), c_init(kc)
    return {"gen": gp, "gen_opt": tx_g.init(gp), "crit": cp, "crit_opt": tx_c.init(cp),
            "key": jax.random.key_data(kk), "step": jnp.zeros((), jnp.int32)}


def tile(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """(N, H, W, C) in [0, 1] -> one (rows*H, columns*W, C) image with 1-pixel gaps."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    out = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1, c), np.float32)
    for i in range(n):
        r, q = divmod(i, columns)
        out[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = images[i]
    return out


def write_grid(images: np.ndarray, path: str | Path, columns: int = 8,
               scale: int = 2) -> None:
    """Writes a grid of images in [0, 1] as PNG (matplotlib's imsave, no axes)."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    grid = np.clip(tile(np.asarray(images, np.float32), columns), 0, 1)
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if grid.shape[-1] == 1:
        plt.imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        plt.imsave(path, grid)


def train_classifier(ds, steps: int, key: jax.Array, batch: int = 128):
    """The jgi MLP trained with Adam (1e-3) on normalised real images; returns
    ``(model, params, test_accuracy)``."""
    model = models.get("mlp", num_classes=ds.info.num_classes)
    shape = ds.info.image_shape
    params = model.init(key, shape)
    x = jnp.asarray(data.normalize(ds.x_train, ds.info))
    y = jnp.asarray(ds.y_train)
    tx = optax.adam(1e-3)

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (batch,), 0, x.shape[0])
        g = fl_client.client_update(model, p, x[idx], y[idx])
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p, k: jax.lax.scan(step, (p, tx.init(p)),
                                                        jax.random.split(k, steps)))(
        params, jax.random.fold_in(key, 1))
    xt = jnp.asarray(data.normalize(ds.x_test, ds.info))
    pred = jnp.argmax(model.apply(params, xt, {}), -1)
    return model, params, float(jnp.mean(pred == jnp.asarray(ds.y_test)))


def nearest_rmse(images: np.ndarray, reference: np.ndarray, chunk: int = 256) -> np.ndarray:
    """RMSE of each image to its nearest reference image (both in [0, 1])."""
    ref = jnp.asarray(reference.reshape(len(reference), -1))
    ref_sq = jnp.sum(ref ** 2, -1)
    d = ref.shape[1]
    out = []
    for i in range(0, len(images), chunk):
        a = jnp.asarray(images[i:i + chunk].reshape(-1, d))
        sq = jnp.sum(a ** 2, -1)[:, None] + ref_sq[None] - 2 * a @ ref.T
        out.append(np.sqrt(np.maximum(np.asarray(jnp.min(sq, -1)), 0) / d))
    return np.concatenate(out)


def quality_check(ds, samples: np.ndarray, *, classifier_steps: int, key: jax.Array,
                  reference_size: int = 10_000) -> dict:
    """The offline quality check of generated ``samples`` (N, H, W, C) in [0, 1]."""
    model, params, acc = train_classifier(ds, classifier_steps, key)
    probs = jax.nn.softmax(model.apply(params, jnp.asarray(data.normalize(samples, ds.info)),
                                       {}), -1)
    probs = np.asarray(probs)
    top = probs.max(-1)
    hist = np.bincount(probs.argmax(-1), minlength=ds.info.num_classes) / len(samples)
    rng = np.random.default_rng(0)
    ref = ds.x_train[rng.choice(len(ds.x_train), min(reference_size, len(ds.x_train)),
                                replace=False)]
    n = len(samples)
    real = ds.x_test[rng.choice(len(ds.x_test), n, replace=False)]
    noise = rng.uniform(size=samples.shape).astype(np.float32)
    real_probs = np.asarray(jax.nn.softmax(model.apply(
        params, jnp.asarray(data.normalize(real, ds.info)), {}), -1)).max(-1)
    return {
        "classifier": "mlp", "classifier_steps": classifier_steps,
        "classifier_test_accuracy": acc, "samples": n,
        "class_histogram": [round(float(h), 4) for h in hist],
        "mean_top_probability": float(top.mean()),
        "fraction_top_probability_above_0.9": float((top > 0.9).mean()),
        "real_test_mean_top_probability": float(real_probs.mean()),
        "real_test_fraction_above_0.9": float((real_probs > 0.9).mean()),
        "nearest_real_rmse_generated": float(nearest_rmse(samples, ref).mean()),
        "nearest_real_rmse_real_test": float(nearest_rmse(real, ref).mean()),
        "nearest_real_rmse_uniform_noise": float(nearest_rmse(noise, ref).mean()),
        "reference_size": len(ref),
    }


def train(args: argparse.Namespace) -> dict:
    """Runs (or resumes) the training; returns the summary written to summary.json."""
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ds = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
    overrides = {k: v for k, v in (("width", args.width), ("latent_dim", args.latent_dim),
                                   ("kernel_size", args.kernel_size), ("norm", args.norm))
                 if v is not None}
    spec = gen.spec_for(args.dataset, **overrides)
    x_train = jnp.asarray(ds.x_train if args.train_limit is None
                          else ds.x_train[:args.train_limit])
    tx_g = optax.adam(args.lr, b1=args.beta1, b2=args.beta2)
    tx_c = optax.adam(args.lr, b1=args.beta1, b2=args.beta2)
    key = jax.random.key(args.seed)
    state = init_state(spec, key, tx_g, tx_c)
    ckpt = PeriodicCheckpoint(workdir / "checkpoints", every_seconds=args.checkpoint_seconds,
                              step_of=lambda s: int(np.asarray(s["step"])))
    state = ckpt.restore(state)
    start = int(np.asarray(state["step"]))
    if ckpt.restored_step is not None:
        print(f"resumed from step {start} ({workdir / 'checkpoints'})", file=sys.stderr)
    chunk = max(1, min(args.chunk, args.sample_every))
    run = make_train_chunk(spec, x_train, batch=args.batch, n_critic=args.n_critic,
                           gp_weight=args.gp_weight, tx_g=tx_g, tx_c=tx_c, chunk=chunk)
    _, g_apply = gen.generator(spec)
    fixed_z = jax.random.normal(jax.random.key(12345), (64, spec.latent_dim))
    sample = jax.jit(g_apply)
    log_path = workdir / "log.jsonl"
    t0 = time.time()
    bar = tqdm(total=args.steps, initial=min(start, args.steps), unit="step",
               desc=f"WGAN-GP {args.dataset}", disable=not args.progress)
    step = start
    try:
        while step < args.steps:
            n = min(chunk, args.steps - step)
            if n != chunk:  # the last, shorter chunk compiles once more
                run = make_train_chunk(spec, x_train, batch=args.batch,
                                       n_critic=args.n_critic, gp_weight=args.gp_weight,
                                       tx_g=tx_g, tx_c=tx_c, chunk=n)
                chunk = n
            state, (w, g_loss) = run(state)
            step = int(np.asarray(state["step"]))
            bar.update(n)
            w_last, g_last = float(w[-1]), float(g_loss[-1])
            bar.set_postfix(wasserstein=f"{w_last:.3f}")
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "wasserstein": w_last,
                                    "generator_loss": g_last,
                                    "seconds": round(time.time() - t0, 2)}) + "\n")
            if step % args.sample_every == 0 or step >= args.steps:
                write_grid(np.asarray(sample(state["gen"], fixed_z)),
                           workdir / "samples" / f"step_{step:06d}.png")
            ckpt.maybe_save(state)
    finally:
        bar.close()
        if step > start:
            ckpt.save(state)
    sha = gen.save_generator(workdir / "generator.msgpack", spec, state["gen"])
    (workdir / "generator.sha256").write_text(sha + "\n")
    summary = {"dataset": args.dataset, "spec": spec.to_dict(), "steps": step,
               "generator_params": gen.num_params(state["gen"]),
               "critic_params": gen.num_params(state["crit"]),
               "sha256": sha, "seconds_this_run": round(time.time() - t0, 1),
               "resumed_from": start,
               "hyperparameters": {"lr": args.lr, "betas": [args.beta1, args.beta2],
                                   "n_critic": args.n_critic, "gp_weight": args.gp_weight,
                                   "batch": args.batch}}
    if args.quality_samples > 0:
        zs = jax.random.normal(jax.random.key(777), (args.quality_samples, spec.latent_dim))
        samples = np.asarray(sample(state["gen"], zs))
        summary["quality"] = quality_check(ds, samples, classifier_steps=args.classifier_steps,
                                           key=jax.random.key(args.seed + 1))
        (workdir / "quality.json").write_text(json.dumps(summary["quality"], indent=1))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data-source", default="auto", choices=data.SOURCES)
    p.add_argument("--data-dir", default=None, help="folder of <dataset>.npz "
                   "(default: $JGI_DATA_DIR)")
    p.add_argument("--steps", type=int, default=2000, help="generator steps (total, "
                   "counting those of a resumed run)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-critic", type=int, default=N_CRITIC)
    p.add_argument("--gp-weight", type=float, default=GP_WEIGHT)
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--beta2", type=float, default=0.9)
    p.add_argument("--width", type=int, default=None, help="generator width "
                   "(default: spec_for(dataset))")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--kernel-size", type=int, default=None)
    p.add_argument("--norm", choices=gen.NORMS, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=50, help="generator steps per compiled call")
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--checkpoint-seconds", type=float, default=60.0)
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training images (tests)")
    p.add_argument("--quality-samples", type=int, default=1000)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    for name in ("steps", "batch", "n_critic", "chunk", "sample_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with results.sigterm_as_interrupt():  # kill saves a checkpoint like Ctrl-C
            summary = train(args)
    except KeyboardInterrupt:
        print(f"interrupted; the checkpoint in {args.workdir}/checkpoints is kept: rerun "
              "the same command to resume.", file=sys.stderr)
        return 130
    print(json.dumps({k: v for k, v in summary.items() if k != "spec"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
