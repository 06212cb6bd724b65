"""GRNN with and without the client's normalisation, and GIAS against IG at batch 4, on MNIST.

    JGI_DATA_DIR=/work/shared/data python -m experiments.grnn_gias --attack=grnn \
        --victims=8 --iters=500 --out=runs/grnn
    JGI_DATA_DIR=/work/shared/data python -m experiments.grnn_gias --attack=gias,ig \
        --generator=runs/gen/mnist/generator.msgpack --victims=8 --batch=4 --out=runs/grnn

GRNN (``--attack=grnn``): DLG's LeNet on 28x28x1 MNIST test digits, one image per
victim (GRNN's batch 1), three settings of the data normalisation (NotEasy Fig. 17):

- ``raw``: the client trains on [0, 1] images, GRNN feeds its sigmoid images as they are;
- ``norm-unmapped``: the client normalises ``(x - mean) / std``, GRNN still feeds [0, 1]
  images (what GRNN's code and NotEasy's port do);
- ``norm-mapped``: the client normalises, GRNN maps its images the same way
  (``normalization=(mean, std)``).

GIAS and IG (``--attack=gias,ig``): ``--batch`` images per victim, drawn from the test
set; the generator must be trained on MNIST (``experiments.train_generator``), so the
victims lie in its domain. The client model is the study CNN-sized LeNet (DLG's, ReLU
would break DLG-style attacks: sigmoid kept). IG: jgi's IG objective on the whole batch
(cosine over all layers + TV 1e-4, Adam lr 0.1 on the pixels, box constraint, known
labels), as many iterations as GIAS's two phases together, so both get the same budget
of gradient evaluations per restart.

Each setting appends one JSON row (SSIM/PSNR per image, loss, label accuracy, timings) to
``<out>/rows.jsonl`` and its images to ``<out>/<setting>.npz``; ``--grid`` draws the
picture grid of every saved setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgi import data, metrics, models, report, results
from jgi.attacks import ggl, gias, grnn, runner
from jgi.attacks.distances import cosine_distance
from jgi.attacks.regularizers import total_variation
from jgi.fl.client import ClientRandomness, client_update

DATASETS = ("mnist", "cifar10")
COMPARED = ("gias", "ig", "ggl", "grnn")  # the attacks of the batch comparison


def victims_data(n: int, batch: int, seed: int = 0, dataset: str = "mnist",
                 source: str = "auto"):
    """``(x (n, batch, H, W, C) in [0, 1], y (n, batch), info)`` from the test split."""
    ds = data.load(dataset, source=source)
    rng = np.random.default_rng(seed)
    idx = rng.choice(ds.x_test.shape[0], n * batch, replace=False)
    shape = tuple(ds.info.image_shape)
    x = np.asarray(ds.x_test[idx], np.float32).reshape(n, batch, *shape)
    if x.max() > 1.5:
        x = x / 255.0
    y = np.asarray(ds.y_test[idx], np.int32).reshape(n, batch)
    return jnp.asarray(x), jnp.asarray(y), ds.info


def stats_of(info):
    """The dataset's per-channel ``(mean, std)`` as float32 arrays."""
    return (np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32))


def observe(model, params, x, y):
    return jax.jit(jax.vmap(lambda xv, yv: client_update(model, params, xv, yv)))(x, y)


def row_of(setting, x, images, labels, y, loss, seconds, extra):
    """SSIM/PSNR per image, positional (reconstruction k against original k); an attack
    that returns fewer images per victim than the batch (GGL: one) is scored by each
    image's best match among the victim's originals, and says so (``scoring``)."""
    x, images = np.asarray(x), np.clip(np.asarray(images), 0, 1)
    shape = x.shape[2:]
    v, b = x.shape[:2]
    labels, y = np.asarray(labels), np.asarray(y)
    if images.shape[1] == b:
        flat_x, flat_r = x.reshape(-1, *shape), images.reshape(-1, *shape)
        ssim, psnr = metrics.ssim(flat_x, flat_r), metrics.psnr(flat_x, flat_r)
        label_acc, scoring = float(np.mean(labels == y)), "positional"
    else:
        rep = np.repeat(images[:, :1], b, axis=1).reshape(-1, *shape)
        s = metrics.ssim(x.reshape(-1, *shape), rep).reshape(v, b)
        p = metrics.psnr(x.reshape(-1, *shape), rep).reshape(v, b)
        j = s.argmax(1)
        ssim, psnr = s[np.arange(v), j], p[np.arange(v), j]
        label_acc = float(np.mean(labels.reshape(v, -1)[:, 0] == y[np.arange(v), j]))
        scoring = "best match of 1 image per victim"
    return {**extra, "setting": setting, "victims": int(v), "batch": int(b),
            "ssim_mean": float(ssim.mean()), "ssim_median": float(np.median(ssim)),
            "psnr_mean": float(psnr.mean()), "ssim": ssim.round(4).tolist(),
            "psnr": psnr.round(2).tolist(), "label_acc": label_acc, "scoring": scoring,
            "loss": np.asarray(loss).tolist(), "seconds": seconds}


def run_grnn(args, out: Path, store):
    """GRNN per normalisation setting, and (``--grnn-ig-iters``) IG on the same victims."""
    x, y, info = victims_data(args.victims, 1, args.seed, args.dataset,
                              args.data_source)
    shape = tuple(info.image_shape)
    model = models.get("lenet", num_classes=info.num_classes)
    params = model.init(jax.random.key(args.seed), shape)
    mean, std = stats_of(info)
    base = {"experiment": "grnn_gias", "dataset": args.dataset, "model": "lenet",
            "victims": args.victims, "batch": 1, "seed": args.seed}
    settings = args.settings.split(",")
    if args.grnn_ig_iters:
        settings += ["ig-raw"] if "raw" in settings else []
        settings += ["ig-norm"] if any(s.startswith("norm") for s in settings) else []
    for setting in settings:
        normalised = setting not in ("raw", "ig-raw")
        if setting.startswith("ig"):
            identity = {**base, "attack": "ig", "setting": setting,
                        "iters": args.grnn_ig_iters, "normalized": normalised}
        else:
            identity = {**base, "attack": "grnn", "setting": setting, "iters": args.iters,
                        "optimizer": args.grnn_optimizer, "lr": args.grnn_lr}
        if store.done(identity):
            continue
        xm = (x - mean) / std if normalised else x
        updates = observe(model, params, xm, y)
        t0 = time.perf_counter()
        if setting.startswith("ig"):
            bounds = data.input_bounds(info) if normalised else (0.0, 1.0)
            result = ig_batch(model, params, updates, y, jax.random.key(args.seed + 3),
                              iters=args.grnn_ig_iters, lr=0.1, tv=1e-4, bounds=bounds,
                              batch=1, shape=shape, progress=setting)
            images = np.asarray(result.best["x"])
            images = images * std + mean if normalised else images
            row = row_of(setting, x, images, y, y, result.best_loss,
                         time.perf_counter() - t0, identity)
            np.savez_compressed(out / f"{setting}.npz", x=np.asarray(x), images=images,
                                labels=y)
            _append(store, identity, row)
            continue
        config = grnn.GRNNConfig(max_iters=args.iters, optimizer=args.grnn_optimizer,
                                 lr=args.grnn_lr, chunk_size=50)
        result = grnn.reconstruct(model, params, updates, jax.random.key(args.seed + 1),
                                  config, input_shape=shape,
                                  normalization=(mean, std)
                                  if setting == "norm-mapped" else None,
                                  progress=f"grnn {setting}")
        seconds = time.perf_counter() - t0
        row = row_of(f"grnn/{setting}", x, result.images, result.labels, y, result.loss,
                     seconds, {**identity, "compile_s": result.attack.compile_seconds})
        np.savez_compressed(out / f"grnn-{setting}.npz", x=np.asarray(x),
                            images=result.images, labels=result.labels)
        _append(store, identity, row)


def ig_batch(model, params, updates, labels, key, *, iters, lr, tv, bounds, batch,
             progress, shape=(28, 28, 1)):
    """IG on a batch per victim: cosine + TV on the pixels, Adam, box, known labels."""
    def init(k, victim, context):
        del victim, context
        return {"x": jax.random.normal(k, (batch, *shape), jnp.float32)}

    def objective(c, victim, context, k):
        del k
        update = client_update(model, context["params"], c["x"], victim["label"],
                               ClientRandomness())
        d = cosine_distance(update, victim["target"])
        return d + tv * jnp.mean(jax.vmap(total_variation)(c["x"])), {}

    def project(c, victim, context):
        del victim
        lo, hi = context["bounds"]
        return {"x": jnp.clip(c["x"], lo, hi)}

    marks = [int(iters // f) for f in (2.667, 1.6, 1.142)]
    opt = optax.adam(optax.piecewise_constant_schedule(lr, {m: 0.1 for m in marks}))
    problem = runner.Problem(init, objective, opt, project)
    bounds = tuple(jnp.asarray(b, jnp.float32) for b in bounds)
    result = runner.run(problem, {"target": updates, "label": labels},
                        {"params": params, "bounds": bounds}, key,
                        runner.StoppingRule(iters, -np.inf, iters + 1), chunk_size=50,
                        progress=progress)
    return result


def generator_from(path: str, width: int | None):
    """``(spec, params, description)`` of a generator: a name or file for
    ``load_generator``, or an ``experiments.train_generator`` workdir still training (its
    newest checkpoint, read only)."""
    from jgi.models import generator as gen_lib  # noqa: PLC0415
    p = Path(path)
    if p.is_dir() and not (p / "generator.msgpack").is_file():
        from experiments import train_generator as tg  # noqa: PLC0415
        from jgi.checkpointing import PeriodicCheckpoint  # noqa: PLC0415
        spec = gen_lib.spec_for("mnist", **({} if width is None else {"width": width}))
        tx = optax.adam(tg.LR, b1=0.5, b2=0.9)
        template = tg.init_state(spec, jax.random.key(0), tx, tx)
        ckpt = PeriodicCheckpoint(p / "checkpoints",
                                  step_of=lambda s: int(np.asarray(s["step"])))
        state = ckpt.restore(template)
        if ckpt.restored_step is None:
            raise FileNotFoundError(f"{p} has no generator.msgpack and no checkpoint yet.")
        return spec, state["gen"], f"{p} checkpoint step {ckpt.restored_step}"
    if p.is_dir():
        p = p / "generator.msgpack"
    spec, params = gen_lib.load_generator(str(p) if p.exists() else path)
    return spec, params, str(path)


def run_gias(args, out: Path, store):
    """GIAS, IG, GGL and GRNN on the same victims (``--batch`` images each)."""
    spec, gen_params, gen_desc = generator_from(args.generator, args.generator_width)
    print("generator:", gen_desc, spec, flush=True)
    x, y, info = victims_data(args.victims, args.batch, args.seed + 100, args.dataset,
                              args.data_source)
    shape = tuple(info.image_shape)
    model = models.get("lenet", num_classes=info.num_classes)
    params = model.init(jax.random.key(args.seed), shape)
    mean, std = stats_of(info)
    normalization = (mean, std) if args.normalize else None
    xm = (x - mean) / std if args.normalize else x
    updates = None
    base = {"experiment": "grnn_gias", "dataset": args.dataset, "model": "lenet",
            "victims": args.victims, "batch": args.batch, "seed": args.seed,
            "normalized": bool(args.normalize)}
    for attack in args.attack.split(","):
        if attack not in COMPARED:
            continue
        identity = {**base, "attack": attack, **{
            "gias": {"latent_iters": args.latent_iters, "param_iters": args.param_iters,
                     "restarts": args.restarts, "generator": gen_desc},
            "ig": {"iters": args.latent_iters + args.param_iters},
            "ggl": {"population": args.population, "generations": args.generations,
                    "generator": gen_desc},
            "grnn": {"iters": args.iters, "optimizer": args.grnn_optimizer,
                     "lr": args.grnn_lr}}[attack]}
        if store.done(identity):
            continue
        if updates is None:
            updates = observe(model, params, xm, y)
        t0 = time.perf_counter()
        key = jax.random.key(args.seed + {"gias": 2, "ig": 3, "ggl": 4, "grnn": 5}[attack])
        if attack == "gias":
            config = gias.GIASConfig(latent_iters=args.latent_iters, param_iters=args.param_iters,
                                     restarts=args.restarts, batch_size=args.batch,
                                     chunk_size=50)
            result = gias.reconstruct(model, params, updates, key, config, input_shape=shape,
                                      generator=(spec, gen_params), labels=y,
                                      normalization=normalization, progress="gias")
            seconds = time.perf_counter() - t0
            for name, images, loss in (("gias-latent", result.latent_images,
                                        result.latent_loss),
                                       ("gias", result.images, result.loss)):
                row = row_of(name, x, images, result.labels, y, loss, seconds,
                             {**identity, "param_iters": args.param_iters
                              if name == "gias" else 0})
                np.savez_compressed(out / f"{name}.npz", x=np.asarray(x), images=images,
                                    labels=result.labels)
                _append(store, identity, row)
            continue
        if attack == "ig":
            bounds = data.input_bounds(info) if args.normalize else (0.0, 1.0)
            result = ig_batch(model, params, updates, y, key, iters=identity["iters"],
                              lr=0.1, tv=1e-4, bounds=bounds, batch=args.batch,
                              shape=shape, progress="ig")
            images = np.asarray(result.best["x"])
            images, labels, loss = (images * std + mean if args.normalize else images, y,
                                    result.best_loss)
        elif attack == "ggl":  # one image per victim (GGL's batch 1), iDLG's label
            config = ggl.GGLConfig(population=args.population, generations=args.generations,
                                   chunk=min(args.generations, 25))
            result = ggl.reconstruct(model, params, updates, key, config,
                                     generator=(spec, gen_params),
                                     input_stats=normalization, progress="ggl")
            images, labels, loss = result.images, result.labels, result.loss
        else:  # grnn: its own untrained generator and joint labels, B images per victim
            config = grnn.GRNNConfig(max_iters=args.iters, batch_size=args.batch,
                                     optimizer=args.grnn_optimizer, lr=args.grnn_lr,
                                     chunk_size=50)
            result = grnn.reconstruct(model, params, updates, key, config,
                                      input_shape=shape, normalization=normalization,
                                      progress="grnn")
            images, labels, loss = result.images, result.labels, result.loss
        row = row_of(attack, x, images, labels, y, loss, time.perf_counter() - t0,
                     identity)
        np.savez_compressed(out / f"{attack}.npz", x=np.asarray(x), images=np.asarray(images),
                            labels=np.asarray(labels))
        _append(store, identity, row)


def _append(store, identity: dict, row: dict):
    store.add(identity, row)
    print(json.dumps({k: v for k, v in row.items() if k not in ("ssim", "psnr", "loss")}),
          flush=True)


def grid(out: Path, path: Path, names: list[str], per_row: int = 8):
    """A PNG: the originals (of the first setting), then each setting's reconstructions."""
    from PIL import Image  # noqa: PLC0415
    first = np.load(out / f"{names[0]}.npz")
    shape = first["x"].shape[2:]
    rows_imgs = [first["x"].reshape(-1, *shape)[:per_row]]
    rows_imgs += [np.load(out / f"{n}.npz")["images"].reshape(-1, *shape)[:per_row]
                  for n in names]
    h, w, c = shape
    rows = []
    for imgs in rows_imgs:
        pad = np.ones((per_row, h + 2, w + 2, c))
        pad[:imgs.shape[0], 1:h + 1, 1:w + 1] = np.clip(imgs, 0, 1)
        rows.append(np.concatenate(list(pad), axis=1))
    img = (np.concatenate(rows, axis=0) * 255).astype(np.uint8)
    img = img[..., 0] if c == 1 else img
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)
    print("grid rows: original,", ", ".join(names), "->", path)


def matched(out: Path, names: list[str]):
    """Positional and best-assignment SSIM/PSNR per setting (each victim's best of the
    B! assignments of its reconstructions to its originals)."""
    import itertools  # noqa: PLC0415
    for name in names:
        f = np.load(out / f"{name}.npz")
        x, r = f["x"], np.clip(f["images"], 0, 1)
        v, b = x.shape[:2]
        shape = x.shape[2:]
        if r.shape[1] != b:
            print(f"{name}: {r.shape[1]} image(s) per victim for a batch of {b}; its rows "
                  "are scored by best match already")
            continue
        s = metrics.ssim(x.reshape(-1, *shape), r.reshape(-1, *shape))
        p = metrics.psnr(x.reshape(-1, *shape), r.reshape(-1, *shape))
        best_s, best_p = [], []
        for i in range(v):
            xs, rs = np.repeat(x[i], b, 0), np.tile(r[i], (b, 1, 1, 1))
            ms = metrics.ssim(xs, rs).reshape(b, b)
            mp = metrics.psnr(xs, rs).reshape(b, b)
            perm = max(itertools.permutations(range(b)),
                       key=lambda q, ms=ms: sum(ms[k, q[k]] for k in range(b)))
            best_s += [ms[k, perm[k]] for k in range(b)]
            best_p += [mp[k, perm[k]] for k in range(b)]
        best_s = np.asarray(best_s)
        print(f"{name}: positional SSIM mean {s.mean():.3f} median {np.median(s):.3f} "
              f"> 0.5 {(s > 0.5).sum()}/{s.size} PSNR {p.mean():.1f} | matched SSIM mean "
              f"{best_s.mean():.3f} median {np.median(best_s):.3f} > 0.5 "
              f"{(best_s > 0.5).sum()}/{best_s.size} PSNR {np.mean(best_p):.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attack", default="grnn",
                   help="grnn alone: the normalisation study; any of gias, ig, ggl (with "
                        "grnn) : the batch comparison (comma-separated)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--data-source", default="auto", choices=data.SOURCES)
    p.add_argument("--victims", type=int, default=8)
    p.add_argument("--iters", type=int, default=1000, help="GRNN iterations (1,000)")
    p.add_argument("--settings", default="raw,norm-unmapped,norm-mapped")
    p.add_argument("--grnn-optimizer", default="rmsprop")
    p.add_argument("--grnn-lr", type=float, default=1e-4)
    p.add_argument("--grnn-ig-iters", type=int, default=0,
                   help="normalisation study: IG with this many iterations on the same "
                        "victims, raw and normalised (0: none)")
    p.add_argument("--population", type=int, default=50, help="GGL's CMA-ES population")
    p.add_argument("--generations", type=int, default=500, help="GGL's generations")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--generator", default="mnist",
                   help="shipped name, generator file, or train_generator workdir")
    p.add_argument("--generator-width", type=int, default=None,
                   help="width of a workdir's generator (train_generator --width)")
    p.add_argument("--latent-iters", type=int, default=500)
    p.add_argument("--param-iters", type=int, default=5000)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--normalize", action="store_true",
                   help="GIAS/IG: the client normalises its inputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/grnn")
    p.add_argument("--grid", default=None, help="write a PNG grid of these settings "
                   "(comma-separated npz names) to --grid-path and exit")
    p.add_argument("--grid-path", default="docs/results/grnn-gias-grnn.png")
    p.add_argument("--matched", default=None, help="print positional and best-assignment "
                   "SSIM/PSNR of these settings (comma-separated npz names) and exit")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.grid:
        grid(out, Path(args.grid_path), args.grid.split(","))
        return 0
    if args.matched:
        matched(out, args.matched.split(","))
        return 0
    attacks = set(args.attack.split(","))
    unknown = attacks - set(COMPARED)
    if unknown:
        p.error(f"unknown attack(s) {', '.join(sorted(unknown))}; valid: "
                f"{', '.join(COMPARED)}")
    store = results.KeyedRows(out / "rows.jsonl", report=False)
    if attacks == {"grnn"}:
        run_grnn(args, out, store)
    else:
        run_gias(args, out, store)
    report.write_report_safely(out, "rows.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
