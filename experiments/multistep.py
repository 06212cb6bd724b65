"""Single-step IG, the study's and the consistent multi-step IG, and DLF on one FedAvg update.

    JGI_DATA_DIR=/work/shared/data python -m experiments.multistep
    python -m experiments.multistep --samples=8 --batch=4 --epochs=2 --lr=0.1 --iters=200

Each of ``--clients`` clients holds ``n`` random MNIST/CIFAR-10 training images and
trains E local epochs of batch B with plain SGD at ``--lr`` from the same (untrained)
global model; the server sees ``W_0 - W_T``. On those updates:

- ``single-step``: jgi's IG on the update as if it were one gradient of ``n`` dummies
  (:func:`jgi.attacks.multistep.single_step_setup`);
- ``study``: the "not easy" study's multi-step IG, E full-batch steps on ``n`` dummies,
  or ``--study-dummies`` of them (the study used 1-10 against hundreds of images; the
  dummies then take labels spread evenly over the sorted label list)
  (:func:`~jgi.attacks.multistep.study_setup`);
- ``consistent``: the client's own ``E * ceil(n / B)`` minibatch steps on ``n`` dummies,
  the attacker's fixed batch order (:func:`~jgi.attacks.multistep.consistent_setup`);
- ``consistent+order``: the same with the client's shuffling known (an oracle: what the
  unknown order costs);
- ``dlf``: DLF (:mod:`jgi.attacks.dlf`), ``--dlf-iters`` iterations.

Labels: every attack gets the same label multiset, the true one (``--labels=true``) or
Dimitrov's inferred counts (``--labels=dimitrov``), sorted by class; the oracle row gets
the true labels in the client's order (an order oracle needs them). Each reconstruction
set is matched to the client's ``n`` images (Hungarian assignment on SSIM), and the
table gives mean SSIM and PSNR over the matched pairs of all clients.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, fl, metrics, models
from jgi.attacks import dlf, fedavg_update, ig

ATTACKS = fedavg_update.ATTACKS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--model", default="mlp", choices=sorted(models.MODELS))
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1, help="client SGD learning rate")
    parser.add_argument("--iters", type=int, default=200, help="IG iterations")
    parser.add_argument("--ig-lr", type=float, default=0.1)
    parser.add_argument("--tv", type=float, default=1e-2, help="IG TV weight")
    parser.add_argument("--dlf-iters", type=int, default=400)
    parser.add_argument("--labels", default="true", choices=("true", "dimitrov"))
    parser.add_argument("--study-dummies", type=int, default=None,
                        help="dummies of the study's set-up (default: n; the study used "
                             "1-10 against hundreds of local images)")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    args = parser.parse_args(argv)
    try:
        attacks = fedavg_update.check_attacks(a for a in args.attacks.split(",") if a)
        local = fl.LocalTraining(epochs=args.epochs, batch_size=args.batch, lr=args.lr)
        if args.clients < 1 or local.steps_per_epoch(args.samples)[0] < 1:
            raise ValueError("need --clients >= 1 and --samples >= --batch")
        if args.study_dummies is not None and not 1 <= args.study_dummies <= args.samples:
            raise ValueError(f"--study-dummies must be in 1..{args.samples}, got "
                             f"{args.study_dummies}")
        attack_config = fedavg_update.UpdateAttackConfig(
            ig=ig.IGConfig(max_iters=args.iters, lr=args.ig_lr, tv_weight=args.tv,
                           chunk_size=min(50, args.iters)),
            dlf=dlf.DLFConfig(max_iters=args.dlf_iters), study_dummies=args.study_dummies)
        dataset = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
    except (ValueError, data.DataError) as e:
        print(f"error: {e}")
        return 2
    info = dataset.info
    shape = info.image_shape
    n, v = args.samples, args.clients
    key = jax.random.key(args.seed)
    rng = np.random.default_rng(args.seed)
    model = models.get(args.model)
    params = model.init(jax.random.fold_in(key, 0), shape)
    idx = np.stack([rng.choice(len(dataset.y_train), n, replace=False) for _ in range(v)])
    originals = dataset.x_train[idx]  # (V, n, H, W, C)
    x = jnp.asarray(data.normalize(originals, info))
    y = jnp.asarray(dataset.y_train[idx])
    client_keys = jax.random.split(jax.random.fold_in(key, 1), v)
    updates = jax.jit(jax.vmap(lambda xi, yi, k: fl.observe(
        model, params, xi, yi, k, local=local).update))(x, y, client_keys)
    obs = fl.Observation(update=updates, params=params, local=local, num_samples=n)
    sorted_labels, count_err = fedavg_update.attack_labels(
        args.labels, model, obs, y, jax.random.fold_in(key, 2), num_classes=info.num_classes,
        input_shape=shape)
    bounds = data.input_bounds(info)
    print(f"# {dataset.describe()}\n# model {args.model}; {v} clients x {n} images, "
          f"B={args.batch}, E={args.epochs} ({local.num_steps(n)} SGD steps, lr {args.lr}); "
          f"labels {args.labels} (count error {count_err:.3f}); IG {args.iters} iterations "
          f"(Adam lr {args.ig_lr}, TV {args.tv}), DLF {args.dlf_iters}; seed {args.seed}",
          flush=True)
    rows = []
    k_attack = jax.random.fold_in(key, 3)
    for name in attacks:
        t0 = time.perf_counter()
        recs = fedavg_update.reconstruct(name, model, obs, sorted_labels, k_attack,
                                         attack_config, input_shape=shape, bounds=bounds,
                                         client_labels=y, client_keys=client_keys)
        recs = np.clip(data.denormalize(recs, info), 0, 1)
        scores = [metrics.matched_ssim_psnr(originals[i], recs[i]) for i in range(v)]
        ssim = np.concatenate([s for s, _ in scores])
        psnr = np.concatenate([p for _, p in scores])
        rows.append((name, float(ssim.mean()), float(ssim.std()), float(psnr.mean()),
                     time.perf_counter() - t0))
        print(f"# {name}: done ({rows[-1][-1]:.0f} s)", file=sys.stderr, flush=True)
    print("\n| attack | SSIM mean | SSIM std | PSNR mean (dB) | seconds |")
    print("|---|---:|---:|---:|---:|")
    for name, s, sd, p, t in rows:
        print(f"| {name} | {s:.3f} | {sd:.3f} | {p:.2f} | {t:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
