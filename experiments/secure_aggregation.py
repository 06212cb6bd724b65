"""What an attacker on the server still sees under secure aggregation.

    python -m experiments.secure_aggregation                        # MNIST, CNN, CPU scale
    python -m experiments.secure_aggregation --clients=1,2,4,8,16 --iters=2000
    python -m experiments.secure_aggregation --parts=dropouts

Three parts (``--parts``, default all), each a markdown table on stdout and one JSON
line per row (``--json``):

- ``single``: Inverting Gradients (``jgi.attacks.ig``, cosine distance, TV prior) on
  one client's one-step gradient of one image, as the server receives it: in the clear,
  as SecAgg's masked input ``y_i`` (read as if it were a quantised gradient: the
  server's best guess), and, with TenSEAL installed, as the first ``4 d`` bytes of its
  CKKS ciphertexts read the same way. Next to it the chance level: the SSIM of an image drawn from
  IG's initial distribution and clipped to the valid box.
- ``aggregate``: IG against the SecAgg sum of N clients' one-step gradients of one
  image each (labels given): the sum is, up to the scale IG's cosine distance ignores,
  the gradient of a batch of N images, so IG optimises a batch of N dummies; each
  reconstruction is matched to an original by the best one-to-one assignment of SSIM
  (Hungarian), and the table gives the mean and best SSIM over the N images. With
  ``--labels=cycle`` (default) the clients' labels cycle through the classes, so up
  to 10 clients the last layer's gradient keeps each image in its own class's row;
  ``--labels=same`` gives every client an image of class 0.
- ``rtf``: Robbing the Fed (``jgi.attacks.rtf``; a malicious server that puts a
  100-bin imprint block, gain 1, in front of the MLP) on the SecAgg sum of N clients'
  one-image gradients: the recovery is linear in the update, so the sum hides nothing
  from it; every image alone in its brightness bin comes back.
- ``fedavg``: FedAvg (``--fedavg-clients`` IID clients of ``--fedavg-samples``
  training images, Adam lr 1e-3, batch 32, ``--fedavg-rounds`` rounds) through each of
  ``--fedavg-schemes`` (:mod:`jgi.fl.secure.fedavg`) against ``jgi.fl.fedavg.train``
  from the same key: test accuracy after every round (at most 1,000 test images) and
  the largest parameter difference at the end.
- ``dropouts``: SecAgg (N = 10, threshold t = 6) with 0..5 clients dropping before the
  masked input and before unmasking: which rounds finish, which refuse.

The protocols run for real on the quantised gradients (Flower's defaults: clipping 8,
2^22 levels, modulus 2^32); IG runs on the decoded sum. Labels are given to IG (for
one image they are recoverable analytically; for a batch we do not estimate them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jgi import data, metrics, models
from jgi.attacks import ig, rtf, runner
from jgi.attacks.distances import DISTANCES
from jgi.attacks.regularizers import total_variation
from jgi.defenses import NO_DEFENSE
from jgi.fl import fedavg, iid_split, victim_updates
from jgi.fl.client import ClientRandomness, client_update
from jgi.models import imprint
from jgi.fl.secure import (SCHEMES, Dropouts, ProtocolError, SecureAggregation, he, secagg,
                           secure_sum)
from jgi.fl.secure import fedavg as secure_fedavg

PARTS = ("single", "aggregate", "rtf", "dropouts", "fedavg")
RTF_BINS = 100  # NotEasy's number of imprint bins


def batch_problem(model, input_shape, batch: int, config: ig.IGConfig) -> runner.Problem:
    """IG for a batch of ``batch`` images behind one (summed) gradient, labels known.

    Victim: ``{"target": the observed update, "label": (batch,) ints}``; the dummy
    update is the client's own mean-loss gradient of the dummy batch (cosine distance
    is scale-free, so the sum of N one-image gradients and N times their mean compare
    alike).
    """
    shape = (batch, *input_shape)

    def init(key, victim, context):
        del victim, context
        return {"x": config.init_std * jax.random.normal(key, shape, jnp.float32)}

    def objective(candidate, victim, context, key):
        noise = model.sample_noise(key, tuple(input_shape), batch)
        update = client_update(model, context["params"], candidate["x"], victim["label"],
                               ClientRandomness(model=noise))
        distance = DISTANCES[config.distance](update, victim["target"])
        tv = jnp.mean(jax.vmap(total_variation)(candidate["x"]))
        return distance + config.tv_weight * tv, {"distance": distance, "tv": tv}

    return runner.Problem(init=init, objective=objective, optimizer=config.optimizer(),
                          project=ig.box_projection(config))


def matched_ssim(originals: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Per-original SSIM under the best one-to-one matching of reconstructions."""
    rows, cols, s = metrics.match_by_ssim(originals, recon)
    return s[rows, cols]


def _setup(args):
    dataset = data.load(args.dataset, data_dir=args.data_dir, source=args.data_source)
    info = dataset.info
    model = models.get(args.model)
    params = model.init(jax.random.key(args.seed), info.image_shape)
    # Distinct images from the test split, labels cycling through the classes (or all
    # of class 0 with --labels=same).
    order = np.argsort(dataset.y_test, kind="stable")
    per_class = [order[dataset.y_test[order] == c] for c in range(info.num_classes)]
    need = max(args.clients_list + [1])
    if args.labels == "same":  # every client's image of class 0
        idx = per_class[0][:need]
    else:
        idx = np.array([per_class[i % info.num_classes][i // info.num_classes]
                        for i in range(need)])
    x01 = dataset.x_test[idx]
    x = np.asarray(data.normalize(x01, info), np.float32)
    y = np.asarray(dataset.y_test[idx], np.int32)
    bounds = tuple(jnp.asarray(b) for b in data.input_bounds(info))
    return dataset, info, model, params, x01, x, y, bounds


def _ig(args, model, params, info, targets, labels, bounds, key):
    """IG on every target (leading axis) at once, each a batch of ``labels.shape[1]``."""
    cfg = ig.IGConfig(max_iters=args.iters, tv_weight=ig.TV_WEIGHTS.get(args.model, 0.01),
                      chunk_size=min(100, args.iters))
    problem = batch_problem(model, info.image_shape, labels.shape[1], cfg)
    victims = {"target": targets, "label": jnp.asarray(labels)}
    result = runner.run(problem, victims, {"params": params, "bounds": bounds}, key,
                        cfg.stopping(), chunk_size=cfg.chunk_size, progress=False)
    return np.clip(np.asarray(data.denormalize(result.best["x"], info)), 0.0, 1.0)


def _flat_gradients(model, params, x, y):
    """Each client's one-step gradient of its one image, flattened (float64), and the
    function that turns a flat vector back into a gradient pytree."""
    flat = jax.jit(lambda p, xs, ys: jax.vmap(lambda g: ravel_pytree(g)[0])(
        victim_updates(model, p, xs, ys)))(params, jnp.asarray(x), jnp.asarray(y))
    return np.asarray(flat, np.float64), ravel_pytree(params)[1]


def _emit(args, rows, header):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in header) + " |")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    print()


def part_single(args, model, params, info, x01, x, y, bounds):
    flat, unravel = _flat_gradients(model, params, x[:2], y[:2])
    q = SecureAggregation().quantization
    seen = []

    def tap(m):
        if m.stage == "masked_input" and m.recipient == -1:
            seen.append(m)
        return m
    encoded = np.stack([q.encode(v) for v in flat])
    secagg.run(encoded, secagg.SecAggConfig(2, flat.shape[1], threshold=2, seed=args.seed),
               None, tap)
    masked = {m.sender: m.payload["y"] for m in seen}[0]
    as_gradient = masked.astype(np.float64) * q.step - q.clip  # the server's best reading
    observed = {"plaintext gradient": flat[0], "SecAgg masked input": as_gradient}
    if he.available("ckks"):
        # The server holds only ciphertext bytes; read the first 4d of them as a
        # quantised gradient, as for the masked input.
        cfg = SecureAggregation("ckks").protocol_config(1, flat.shape[1])
        cts = he.Client(0, flat[0], cfg, he.make_keys(cfg))._encrypt()
        words = np.frombuffer(b"".join(cts)[:4 * flat.shape[1]], "<u4")
        observed["CKKS ciphertext bytes"] = words.astype(np.float64) * q.step - q.clip
    key = jax.random.key(args.seed + 1)
    t0 = time.perf_counter()
    targets = jax.vmap(unravel)(jnp.asarray(np.stack(list(observed.values())), jnp.float32))
    recon = _ig(args, model, params, info, targets, np.stack([y[:1]] * len(observed)),
                bounds, key)
    seconds = round(time.perf_counter() - t0, 1)
    rows = [{"part": "single", "observed": what,
             "ssim": round(float(metrics.ssim(x01[:1], recon[v])[0]), 3),
             "iters": args.iters, "seconds": seconds}
            for v, what in enumerate(observed)]
    init = np.clip(np.asarray(data.denormalize(
        jax.random.normal(key, (1, *info.image_shape)), info)), 0, 1)
    rows.append({"part": "single", "observed": "chance (IG's initial image)",
                 "ssim": round(float(metrics.ssim(x01[:1], init)[0]), 3), "iters": 0,
                 "seconds": 0.0})
    _emit(args, rows, ["observed", "ssim", "iters", "seconds"])
    return rows


def part_aggregate(args, model, params, info, x01, x, y, bounds):
    rows = []
    for n in args.clients_list:
        flat, unravel = _flat_gradients(model, params, x[:n], y[:n])
        if n == 1:
            total, scheme = flat[0], "plaintext (one client)"
        else:
            out = secure_sum(flat, SecureAggregation("secagg", seed=args.seed))
            total, scheme = out.total, "secagg"
        t0 = time.perf_counter()
        target = jax.tree.map(lambda t: t[None], unravel(jnp.asarray(total, jnp.float32)))
        recon = _ig(args, model, params, info, target, y[None, :n], bounds,
                    jax.random.key(args.seed + 2))
        s = matched_ssim(x01[:n], recon[0])
        rows.append({"part": "aggregate", "clients": n, "images": n, "scheme": scheme,
                     "ssim_mean": round(float(s.mean()), 3),
                     "ssim_max": round(float(s.max()), 3),
                     "asr": round(metrics.attack_success_rate(s), 3),
                     "iters": args.iters, "seconds": round(time.perf_counter() - t0, 1)})
    _emit(args, rows, ["clients", "scheme", "ssim_mean", "ssim_max", "asr", "iters",
                       "seconds"])
    return rows


def part_rtf(args, dataset, info, x01, x, y):
    """Robbing the Fed (``jgi.attacks.rtf``) through the SecAgg sum of N clients."""
    mu, sd = imprint.brightness_statistics(
        data.normalize(dataset.x_train[:500], info))  # the server's public estimate
    model = imprint.imprint_model(models.get("mlp"), RTF_BINS, gain=1.0,
                                  brightness_mean=mu, brightness_std=sd)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), info.image_shape)
    thresholds = imprint.brightness_thresholds(RTF_BINS, "gaussian", mu, sd)
    rows = []
    for n in args.clients_list:
        flat, unravel = _flat_gradients(model, params, x[:n], y[:n])
        out = secure_sum(flat, SecureAggregation("secagg", seed=args.seed)) if n > 1 else None
        total = flat[0] if out is None else out.total
        recovery = rtf.recover(unravel(jnp.asarray(total, jnp.float32)), info.image_shape)
        idx, _ = rtf.match(jnp.asarray(x[:n]), recovery)
        recon = np.clip(np.asarray(data.denormalize(recovery.images[np.asarray(idx)], info)),
                        0, 1)
        s = metrics.ssim(x01[:n], recon)
        bins = np.asarray(rtf.bins_of(thresholds, jnp.asarray(x[:n])))
        alone = np.bincount(bins, minlength=RTF_BINS)[bins] == 1
        rows.append({"part": "rtf", "clients": n, "scheme": "secagg" if out else "plaintext",
                     "alone_in_bin": int(alone.sum()),
                     "recovered_ssim_gt_0.9": int((s > 0.9).sum()),
                     "ssim_mean": round(float(s.mean()), 3),
                     "ssim_min_alone": round(float(s[alone].min()), 3) if alone.any() else None})
    _emit(args, rows, ["clients", "scheme", "alone_in_bin", "recovered_ssim_gt_0.9",
                       "ssim_mean", "ssim_min_alone"])
    return rows


def part_fedavg(args, dataset, info):
    """FedAvg's test accuracy with each scheme against jgi.fl.fedavg's plaintext run."""
    n_examples = args.fedavg_clients * args.fedavg_samples
    split = iid_split(jax.random.key(args.seed), n_examples, args.fedavg_clients)
    x_all = np.asarray(data.normalize(dataset.x_train[:n_examples], info), np.float32)
    cd = fedavg.client_data(x_all, dataset.y_train[:n_examples], split)
    x_test = jnp.asarray(data.normalize(dataset.x_test[:1000], info), jnp.float32)
    y_test = jnp.asarray(dataset.y_test[:1000])
    model = models.get(args.model)
    cfg = fedavg.FedAvgConfig(rounds=args.fedavg_rounds, batch_size=32, patience=10**6)
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    ref = fedavg.train(model, NO_DEFENSE, cd, x_test, y_test, key, cfg, progress=False)
    rows = [{"part": "fedavg", "scheme": "jgi.fl.fedavg (reference)",
             "accuracy_per_round": [round(a, 4) for a in ref.history["test_accuracy"]],
             "max_param_diff": f"(best round {ref.best_round})",
             "seconds": round(time.perf_counter() - t0, 1)}]
    for scheme in args.fedavg_schemes:
        if scheme in ("ckks", "paillier") and not he.available(scheme):
            continue
        t0 = time.perf_counter()
        out = secure_fedavg.train(model, NO_DEFENSE, cd, x_test, y_test, key, cfg,
                                  SecureAggregation(scheme, seed=args.seed))
        diff = max(float(jnp.abs(a - b).max()) for a, b in
                   zip(jax.tree.leaves(out.params), jax.tree.leaves(ref.params), strict=True))
        rows.append({"part": "fedavg", "scheme": scheme,
                     "accuracy_per_round": [round(a, 4) for a in out.history["test_accuracy"]],
                     "max_param_diff": float(f"{diff:.3g}"),
                     "seconds": round(time.perf_counter() - t0, 1)})
    _emit(args, rows, ["scheme", "accuracy_per_round", "max_param_diff", "seconds"])
    return rows


def part_dropouts(args):
    n, t, d = 10, 6, 1000
    rng = np.random.default_rng(args.seed)
    inputs = rng.integers(0, 2**22, (n, d), dtype=np.uint32)
    rows = []
    for stage in ("masked_input", "unmask"):
        for k in range(0, n - t + 2):
            cfg = secagg.SecAggConfig(n, d, threshold=t, seed=args.seed)
            try:
                run = secagg.run(inputs, cfg, Dropouts.at(stage, range(k)))
                exact = np.array_equal(
                    run.total, inputs[list(run.contributors)].sum(0, dtype=np.uint32))
                outcome = f"sum of {len(run.contributors)} clients, exact: {exact}"
            except ProtocolError as e:
                outcome = "refused: " + str(e).split(";")[0]
            rows.append({"part": "dropouts", "drop_before": stage, "dropped": k,
                         "outcome": outcome})
    _emit(args, rows, ["drop_before", "dropped", "outcome"])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--clients", default="1,2,4,8,16", help="N for the aggregate part")
    parser.add_argument("--iters", type=int, default=1000, help="IG iterations per run")
    parser.add_argument("--labels", default="cycle", choices=("cycle", "same"),
                        help="clients' images cycle through the classes, or all of class 0")
    parser.add_argument("--fedavg-clients", type=int, default=10)
    parser.add_argument("--fedavg-samples", type=int, default=200,
                        help="training examples per client (10 %% kept for validation)")
    parser.add_argument("--fedavg-rounds", type=int, default=3)
    parser.add_argument("--fedavg-schemes", default="plaintext,secagg,lightsecagg,ckks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print one JSON line a row")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        print(f"error: --parts takes a comma-separated subset of {', '.join(PARTS)}, got "
              f"{args.parts!r}.")
        return 2
    try:
        args.clients_list = [int(c) for c in args.clients.split(",") if c]
        if not args.clients_list or min(args.clients_list) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --clients takes positive integers, e.g. 1,2,4, got {args.clients!r}.")
        return 2
    args.fedavg_schemes = [x for x in args.fedavg_schemes.split(",") if x]
    if set(args.fedavg_schemes) - set(SCHEMES):
        print(f"error: --fedavg-schemes takes a subset of {', '.join(SCHEMES)}.")
        return 2
    if args.iters < 1:
        print(f"error: --iters must be >= 1, got {args.iters}.")
        return 2
    if "dropouts" in parts:
        part_dropouts(args)
    if {"single", "aggregate", "rtf", "fedavg"} & set(parts):
        try:
            setup = _setup(args)
        except data.DataError as e:
            print(f"error: {e}")
            return 2
        dataset, info, model, params, x01, x, y, bounds = setup
        print(f"{args.model} on {info.name}, IG {args.iters} iterations, labels "
              f"{args.labels}, seed {args.seed}\n")
        if "single" in parts:
            part_single(args, model, params, info, x01, x, y, bounds)
        if "aggregate" in parts:
            part_aggregate(args, model, params, info, x01, x, y, bounds)
        if "rtf" in parts:
            part_rtf(args, dataset, info, x01, x, y)
        if "fedavg" in parts:
            part_fedavg(args, dataset, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
