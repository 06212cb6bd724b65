"""Label-count inference against batch size and local steps, every method in one table.

    JGI_DATA_DIR=/work/shared/data python -m experiments.label_counts
    python -m experiments.label_counts --dataset=cifar10 --samples=50 --batches=50,10 \
        --epochs=1,2,5 --lr=0.1 --pretrain-steps=300

Each row is one local training (n samples per client, batch B, E epochs, so
``E * ceil(n / B)`` SGD steps at learning rate ``--lr``) observed for ``--clients``
clients, each holding ``n`` random training images (IID); every method of
:mod:`jgi.attacks.label_counts` infers each client's counts from its weight change
``W_0 - W_T``. Cells: mean count error ``sum |c_hat - c| / n`` (0 exact, 2 all wrong) and,
in parentheses, mean label accuracy. ``--pretrain-steps`` first trains the model
centrally (SGD, batch 64, lr 0.05) so that its softmax is no longer uniform, the
regime of a FedAvg round after the first.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi import data, fl, models
from jgi.fl import client as fl_client
from jgi.attacks import label_counts as lc


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def pretrain(model, params, x, y, steps: int, key, lr: float = 0.05, batch: int = 64):
    """``steps`` SGD steps of the model on random batches of ``(x, y)`` (jitted)."""
    if steps == 0:
        return params
    tx = optax.sgd(lr)

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (batch,), 0, x.shape[0])
        g = fl_client.client_update(model, p, x[idx], y[idx])
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)),
                                                     jax.random.split(key, steps)))(params)
    return params


def evaluate(model, params, x, y, idx, local: fl.LocalTraining, key, methods, input_shape,
             config: lc.LabelCountConfig | None = None) -> dict:
    """Mean count error and label accuracy per method for the clients ``idx`` (V, n)."""
    config = lc.LabelCountConfig() if config is None else config
    n = idx.shape[1]
    nc = fl_client.num_classes(model, params)

    def run(p):
        keys = jax.random.split(key, idx.shape[0])
        updates = jax.vmap(lambda i, k: fl.observe(model, p, x[i], y[i], k,
                                                   local=local).update)(idx, keys)
        obs = fl.Observation(update=updates, params=p, local=local, num_samples=n)
        true = jax.vmap(lambda i: lc.counts_of(y[i], nc))(idx)
        out = {}
        for m in methods:
            counts = jax.vmap(lambda u, k, m=m: lc.infer_counts(
                m, obs.replace(update=u), model, key=k, input_shape=input_shape,
                config=config))(updates, jax.random.split(jax.random.fold_in(key, 1),
                                                          idx.shape[0]))
            out[m] = (jnp.mean(lc.count_error(counts, true)),
                      jnp.mean(lc.label_accuracy(counts, true)))
        return out

    return {m: (float(e), float(a)) for m, (e, a) in jax.jit(run)(params).items()}


def table(rows: list[dict], methods: Sequence[str]) -> str:
    head = "| n | B | E | steps | " + " | ".join(methods) + " |"
    sep = "|" + "---:|" * 4 + "---|" * len(methods)
    lines = [head, sep]
    for r in rows:
        cells = " | ".join(f"{r[m][0]:.3f} ({r[m][1]:.2f})" for m in methods)
        lines.append(f"| {r['n']} | {r['B']} | {r['E']} | {r['steps']} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--model", default="mlp", choices=sorted(models.MODELS))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--samples", default="1,32", help="n per client, comma-separated")
    parser.add_argument("--batches", default="32,8,2",
                        help="local batch sizes (capped at n; n=1 runs batch 1 only)")
    parser.add_argument("--epochs", default="1,2,5")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--methods", default=",".join(lc.METHODS))
    parser.add_argument("--num-dummies", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    args = parser.parse_args(argv)
    try:
        methods = [m for m in args.methods.split(",") if m]
        for m in methods:
            if m not in lc.METHODS:
                raise ValueError(f"unknown method {m!r}; valid: {', '.join(lc.METHODS)}")
        samples, batches, epochs = _ints(args.samples), _ints(args.batches), _ints(args.epochs)
        if args.clients < 1 or not samples or min(samples) < 1:
            raise ValueError("need --clients >= 1 and --samples >= 1")
        config = lc.LabelCountConfig(num_dummies=args.num_dummies)
        dataset = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
    except (ValueError, data.DataError) as e:
        print(f"error: {e}")
        return 2
    info = dataset.info
    key = jax.random.key(args.seed)
    x = jnp.asarray(data.normalize(dataset.x_train, info))
    y = jnp.asarray(dataset.y_train)
    model = models.get(args.model)
    params = model.init(jax.random.fold_in(key, 0), info.image_shape)
    params = pretrain(model, params, x, y, args.pretrain_steps, jax.random.fold_in(key, 1))
    print(f"# {dataset.describe()}\n# model {args.model}, lr {args.lr}, "
          f"{args.pretrain_steps} pretraining steps, {args.clients} clients per row, "
          f"{args.num_dummies} dummies, seed {args.seed}", flush=True)
    rows = []
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    for n in samples:
        settings = [(1, 1)] if n == 1 else sorted(
            {(min(b, n), e) for b, e in itertools.product(batches, epochs)},
            key=lambda s: (-s[0], s[1]))
        idx = jnp.asarray(np.stack([rng.choice(len(y), n, replace=False)
                                    for _ in range(args.clients)]))
        for b, e in settings:
            local = fl.LocalTraining(epochs=e, batch_size=b, lr=args.lr)
            res = evaluate(model, params, x, y, idx, local,
                           jax.random.fold_in(key, len(rows) + 2), methods,
                           info.image_shape, config)
            rows.append({"n": n, "B": b, "E": e, "steps": local.num_steps(n), **res})
            print(f"# n={n} B={b} E={e}: done ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    print("\nCount error sum|c_hat - c| / n (label accuracy), mean over clients:\n")
    print(table(rows, methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
