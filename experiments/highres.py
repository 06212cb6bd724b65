"""The high-resolution medical attack (Health, issue 19): Table I, Table II and Fig. 5.

    python -m experiments.highres --out=results/highres --resolutions=64,128 --steps=50
    python -m experiments.highres --resolutions=256,512,1024,2048 --steps=250   # GPU
    python -m experiments.highres --resolutions=512 --methods=paper \\
        --noise-variances=1e-6,1e-5,1e-4,1e-3,1e-2,1e-1                            # Fig. 5
    python -m experiments.highres --images=folder:/data/chest_xray/train/NORMAL    # Kaggle

Dao and Nguyen 2023 (BREADTH.md section 3): one image's gradient of the 4-conv LeNet
(``lenet(**HEALTH_OPTIONS)``: 12 channels, kernel 5, strides 2, 2, 1, 1, He init, 2
classes, 3-channel input), inverted by L-BFGS on the image with the gradient distance +
squared TV + six-norm at the paper's weights per resolution
(:func:`jgi.attacks.highres.for_resolution`; ``paper``) or the gradient term alone with
coefficient 6 (``dlg-baseline``, Table II), labels known, clipped to [0, 1] at the end.

Each row is one (resolution, method, image, noise variance): seconds (the runner's wall
time, compilation included, and the compile time alone), L-BFGS iterations, MSE / SSIM /
PSNR (:mod:`jgi.metrics`, on the clipped image), the number of variables, which image
and whether it was upsampled, the analytic step's exactness (the recovered classifier
input put through the classifier against the true logits), and peak memory: the
accelerator's ``peak_bytes_in_use`` where JAX reports it (GPU/TPU), otherwise the
process's peak resident set (``resource.getrusage`` max RSS), a high-water mark of the
whole process, so a row's figure includes every earlier row's.

Fig. 5's noise: Gaussian noise of variance ``v`` (std ``sqrt(v)``) added to every entry
of the shared gradient, no clipping, before the attack sees it.

Rows go to ``<out>/results.jsonl`` through :class:`jgi.results.KeyedRows`, keyed by every
setting that changes a result (:func:`identity`); a row already there is skipped on a
rerun, so an interrupted sweep resumes. Within a row, ``--checkpoint-every=SECONDS``
saves the runner's state (image, L-BFGS history, best point) at chunk boundaries into
``<out>/ckpt/<row id>`` at most that often, and a rerun continues the row from there
(for the long 512^2-2048^2 rows; ``--chunk-size`` sets the steps between boundaries).
``table.md`` and one grid PNG per row (original above the
reconstruction) are written into ``--out``, and ``fig5.png`` when there are noise rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi import checkpointing, figures, metrics, report, results
from jgi.attacks import highres, lbfgs
from jgi.data import DataError
from jgi.data import highres as images
from jgi.fl.client import client_update
from jgi.models.layers import CONV_IMPLS
from jgi.models.lenet import ACTIVATIONS, HEALTH_OPTIONS, lenet

METHODS = ("paper", "dlg-baseline")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """One sweep.

    Attributes:
      resolutions: square sides (the paper: 256, 512, 1024, 2048).
      methods: "paper" and/or "dlg-baseline".
      images: image specs (:func:`jgi.data.highres.load_image`).
      steps: L-BFGS steps per attack (the paper needs ~250).
      lbfgs: "pytorch" or "optax".
      activation: the LeNet's activation ("sigmoid" or "relu"; the paper does not say).
      init: the dummy's initialisation ("normal", "uniform", "analytic").
      noise_variances: Gaussian noise variances added to the gradient (0: none).
      seed: model initialisation (key seed) and dummy (key seed + 1).
      conv_impl: the LeNet's convolution formulation ("patches" or "lax", the same
        function). "patches": inside the runner (vmapped over victims, L-BFGS in a
        while loop) lax's convolutions ran 2x slower at 256^2 (docs/results/highres.md),
        although a lone objective evaluation is faster with lax.
      gradient_mode: the gradient term's derivative ("jvp", fastest, or
        "double-reverse"; :func:`jgi.attacks.highres.gradient_term`).
      data_dir: where PneumoniaMNIST's file is (None: ``JGI_DATA_DIR``).
      gradient_reduction: the gradient distance over the parameters, "sum" (DLG's sum of
        squares, the default) or "mean" (the paper's "MSE" taken literally: the sum / the
        number of gradient entries, which makes the TV and six-norm weights that many
        times stronger relative to the gradient term).
      chunk_size: steps per compiled chunk (None: min(10, steps)); checkpoints and the
        progress bar act between chunks. Does not change the iterates.
    """

    resolutions: tuple[int, ...] = (64, 128)
    methods: tuple[str, ...] = METHODS
    images: tuple[str, ...] = ("skimage:retina",)
    steps: int = 50
    lbfgs: str = "pytorch"
    activation: str = "sigmoid"
    init: str = "normal"
    noise_variances: tuple[float, ...] = (0.0,)
    seed: int = 0
    conv_impl: str = "patches"
    gradient_mode: str = "jvp"
    data_dir: str | None = None
    gradient_reduction: str = "sum"
    chunk_size: int | None = None

    def __post_init__(self):
        bad = sorted(set(self.methods) - set(METHODS))
        if bad or not self.methods:
            raise ValueError(f"methods must be among {', '.join(METHODS)}; got {self.methods}.")
        if not self.resolutions or min(self.resolutions) < 8:
            raise ValueError(f"resolutions must be sides >= 8 (the LeNet's strides), got "
                             f"{self.resolutions}.")
        for name, valid in (("lbfgs", lbfgs.SEMANTICS), ("activation", ACTIVATIONS),
                            ("init", highres.INITS), ("conv_impl", CONV_IMPLS),
                            ("gradient_mode", highres.GRADIENT_MODES),
                            ("gradient_reduction", highres.REDUCTIONS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}, got "
                                 f"{getattr(self, name)!r}.")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (or None: min(10, steps)), got "
                             f"{self.chunk_size}.")
        if not self.images:
            raise ValueError("images: give at least one image spec.")
        if any(v < 0 for v in self.noise_variances) or not self.noise_variances:
            raise ValueError(f"noise_variances must be >= 0 (0: no noise), got "
                             f"{self.noise_variances}.")


def attack_config(method: str, side: int, sweep: SweepConfig) -> highres.HighResConfig:
    common = {"max_iters": sweep.steps, "lbfgs": sweep.lbfgs, "init": sweep.init,
              "chunk_size": min(10, sweep.steps) if sweep.chunk_size is None
              else min(sweep.chunk_size, sweep.steps), "gradient_mode": sweep.gradient_mode,
              "gradient_reduction": sweep.gradient_reduction}
    if method == "paper":
        return highres.for_resolution(side, **common)
    return highres.dlg_baseline(**common)


def identity(side: int, method: str, image: str, variance: float, sweep: SweepConfig) -> dict:
    """Everything that determines a row's result (the formulations too: they change the
    float rounding, hence the trajectory; the chunk size does not)."""
    return {"resolution": side, "method": method, "image": image,
            "noise_variance": float(variance), "steps": sweep.steps, "lbfgs": sweep.lbfgs,
            "activation": sweep.activation, "init": sweep.init, "seed": sweep.seed,
            "conv_impl": sweep.conv_impl, "gradient_mode": sweep.gradient_mode,
            "gradient_reduction": sweep.gradient_reduction}


def peak_memory() -> tuple[float, str]:
    """(MiB, how): the device's peak bytes where JAX reports them, else the max RSS."""
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") \
        else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"


def run_row(ident: dict, sweep: SweepConfig, out: Path, progress: bool = False,
            checkpoint=None) -> dict:
    side, method = ident["resolution"], ident["method"]
    shape = (side, side, 3)
    src = images.load_image(ident["image"], side, data_dir=sweep.data_dir)
    model = lenet(**HEALTH_OPTIONS, activation=sweep.activation, conv_impl=sweep.conv_impl)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(sweep.seed), shape)
    x = jnp.asarray(src.image)[None]
    y = jnp.asarray([src.label % 2], jnp.int32)
    grad = jax.jit(lambda p, x, y: client_update(model, p, x, y))(params, x, y)
    if ident["noise_variance"] > 0:
        leaves, tree = jax.tree.flatten(grad)
        keys = jax.random.split(jax.random.key(sweep.seed + 2), len(leaves))
        std = math.sqrt(ident["noise_variance"])
        grad = jax.tree.unflatten(tree, [a + std * jax.random.normal(k, a.shape, a.dtype)
                                         for a, k in zip(leaves, keys, strict=True)])
    config = attack_config(method, side, sweep)
    result = highres.reconstruct(model, params, grad, y, jax.random.key(sweep.seed + 1),
                                 config, input_shape=shape,
                                 progress=f"{side}^2 {method}" if progress else False,
                                 **({} if checkpoint is None else {"checkpoint": checkpoint}))
    rec = result.images[:, 0]
    logits, _ = jax.jit(model.forward)(params, x, {})
    dense = params[model.classifier]
    analytic_err = float(jnp.max(jnp.abs(result.features[0] @ dense["w"] + dense["b"]
                                         - logits[0])))
    mem, how = peak_memory()
    s, m, p = (float(metrics.ssim(x, rec)[0]), float(metrics.mse(x, rec)[0]),
               float(metrics.psnr(x, rec)[0]))
    grid = out / (f"grid_{side}_{method}_{ident['image'].replace(':', '-').replace('/', '_')}"
                  f"_v{ident['noise_variance']:g}.png")
    figures.reconstruction_grid(np.asarray(x), rec, [s], grid,
                                title=f"{method} {side}^2 {ident['image']}", columns=2)
    return {**ident, "variables": int(np.prod(shape)), "seconds": result.attack.wall_seconds,
            "compile_seconds": result.attack.compile_seconds,
            "iterations": int(result.attack.iterations[0]),
            "best_loss": float(result.attack.best_loss[0]), "mse": m, "ssim": s, "psnr": p,
            "peak_memory_mib": mem, "memory_measured_as": how,
            "native_shape": list(src.native_shape), "upsampled": src.upsampled,
            "analytic_logit_error": analytic_err,
            "weights": [config.alpha_g, config.alpha_tv, config.alpha_norm],
            "device": jax.devices()[0].device_kind, "grid": grid.name,
            "resumed_from_step": None if checkpoint is None else checkpoint.restored_step}


def _reduction(r: dict) -> str:
    """The row's gradient reduction (rows written before the option existed: "sum")."""
    return r.get("gradient_reduction", "sum")


def _image_cell(r: dict) -> str:
    native = "x".join(str(v) for v in r["native_shape"])
    return f"{r['image']} ({native}{', upsampled' if r['upsampled'] else ''})"


def markdown(rows: Sequence[dict]) -> str:
    """Table I-style, Table II-style and Fig. 5-style tables with the paper's numbers."""
    out = ["## Table I-style (method paper, no noise)", "",
           "| side | image | variables | s (compile) | iters | peak MiB | MSE | SSIM | PSNR "
           "| paper s | paper MSE | SSIM | PSNR |", "|" + "---|" * 13]
    clean = [r for r in rows if r["noise_variance"] == 0]
    for r in sorted((r for r in clean if r["method"] == "paper"),
                    key=lambda r: (r["resolution"], r["image"])):
        ref = highres.PAPER_TABLE_I.get(r["resolution"])
        paper = (f"{ref[1]:g} | {ref[2]} | {ref[3]} | {ref[4]}" if ref else "- | - | - | -")
        out.append(f"| {r['resolution']} | {_image_cell(r)} | {r['variables']:,} | "
                   f"{r['seconds']:.0f} ({r['compile_seconds']:.0f}) | {r['iterations']} | "
                   f"{r['peak_memory_mib']:.0f} | {r['mse']:.4f} | {r['ssim']:.3f} | "
                   f"{r['psnr']:.2f} | {paper} |")
    out += ["", "## Table II-style (DLG baseline vs the paper's loss)", "",
            "| side | image | method | MSE | SSIM | PSNR | paper MSE | SSIM | PSNR |",
            "|" + "---|" * 9]
    for r in sorted(clean, key=lambda r: (r["resolution"], r["image"], r["method"])):
        ref = highres.PAPER_TABLE_II["dlg" if r["method"] == "dlg-baseline" else "paper"]
        paper = " | ".join(str(v) for v in ref) + (" (512)" if r["resolution"] != 512 else "")
        out.append(f"| {r['resolution']} | {_image_cell(r)} | {r['method']} | {r['mse']:.4f} | "
                   f"{r['ssim']:.3f} | {r['psnr']:.2f} | {paper} |")
    noisy = [r for r in rows if r["noise_variance"] > 0]
    if noisy:
        out += ["", "## Fig. 5-style (Gaussian noise on the gradient)", "",
                "| side | image | method | reduction | variance | MSE | SSIM | PSNR |",
                "|" + "---|" * 8]
        for r in sorted(noisy, key=lambda r: (r["resolution"], r["image"], r["method"],
                                               _reduction(r), r["noise_variance"])):
            out.append(f"| {r['resolution']} | {_image_cell(r)} | {r['method']} | "
                       f"{_reduction(r)} | "
                       f"{r['noise_variance']:g} | {r['mse']:.4f} | {r['ssim']:.3f} | "
                       f"{r['psnr']:.2f} |")
        ref = highres.PAPER_FIG5_AT_1E2
        out.append(f"\nPaper (512^2, variance 1e-2): MSE {ref[0]}, SSIM {ref[1]}, PSNR {ref[2]}.")
    if rows:
        out.append(f"\nDevice: {rows[0]['device']}; memory: {rows[0]['memory_measured_as']}.")
    return "\n".join(out) + "\n"


def fig5(rows: Sequence[dict], path: Path) -> None:
    """The three metrics against the noise variance (log x), one line per group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    noisy = [r for r in rows if r["noise_variance"] > 0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    groups = sorted({(r["resolution"], r["image"], r["method"], _reduction(r)) for r in noisy})
    for g in groups:
        rs = sorted((r for r in noisy
                     if (r["resolution"], r["image"], r["method"], _reduction(r)) == g),
                    key=lambda r: r["noise_variance"])
        for ax, key in zip(axes, ("mse", "ssim", "psnr"), strict=True):
            ax.plot([r["noise_variance"] for r in rs], [r[key] for r in rs], "o-",
                    label=f"{g[0]} {g[1]} {g[2]} {g[3]}")
    for ax, key in zip(axes, ("MSE", "SSIM", "PSNR"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("noise variance")
        ax.set_title(key)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/highres")
    ap.add_argument("--resolutions", default="64,128")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--images", default="skimage:retina",
                    help="comma-separated specs: skimage:<name>, pneumoniamnist:<i>, "
                         "folder:<path>")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--lbfgs", default="pytorch")
    ap.add_argument("--activation", default="sigmoid")
    ap.add_argument("--init", default="normal")
    ap.add_argument("--noise-variances", default="0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conv-impl", default="patches")
    ap.add_argument("--gradient-mode", default="jvp")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--gradient-reduction", default="sum",
                    help="sum (DLG's, default) or mean (the paper's MSE taken literally)")
    ap.add_argument("--chunk-size", type=int, default=None,
                    help="steps per compiled chunk (default min(10, steps))")
    ap.add_argument("--checkpoint-every", type=float, default=0.0,
                    help="seconds between checkpoints of a running row (0: none)")
    ap.add_argument("--progress", action="store_true", help="a progress bar per row (stderr)")
    args = ap.parse_args(argv)
    try:
        sweep = SweepConfig(
            resolutions=tuple(int(v) for v in args.resolutions.split(",") if v),
            methods=tuple(v for v in args.methods.split(",") if v),
            images=tuple(v for v in args.images.split(",") if v), steps=args.steps,
            lbfgs=args.lbfgs, activation=args.activation, init=args.init,
            noise_variances=_floats(args.noise_variances), seed=args.seed,
            conv_impl=args.conv_impl, gradient_mode=args.gradient_mode, data_dir=args.data_dir,
            gradient_reduction=args.gradient_reduction, chunk_size=args.chunk_size)
        if args.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0 seconds (0: none), got "
                             f"{args.checkpoint_every}.")
    except ValueError as e:
        print(f"error: {e}")
        return 2
    out = Path(args.out)
    rows_path = out / "results.jsonl"
    with results.lock_workdir(out), results.sigterm_as_interrupt():
        store = results.KeyedRows(rows_path)
        added = 0
        for side in sweep.resolutions:
            for image in sweep.images:
                for method in sweep.methods:
                    for variance in sweep.noise_variances:
                        ident = identity(side, method, image, variance, sweep)
                        label = f"{side}^2 {method} {image} var={variance:g}"
                        if store.done(ident):
                            print(f"{label}: row already in {rows_path}, skipped")
                            continue
                        ckpt = (checkpointing.AttackCheckpoint(
                            out / "ckpt" / results.row_id(ident), args.checkpoint_every)
                            if args.checkpoint_every > 0 else None)
                        try:
                            row = run_row(ident, sweep, out, args.progress, ckpt)
                        except DataError as e:
                            print(f"error: {e}")
                            return 2
                        store.add(ident, row)
                        if ckpt is not None:
                            ckpt.clear()
                        added += 1
                        print(f"{label}: SSIM {row['ssim']:.3f} MSE {row['mse']:.4f} PSNR "
                              f"{row['psnr']:.2f} in {row['seconds']:.0f} s", flush=True)
        rows = store.rows()
        table = markdown(rows)
        results.write_text(out / "table.md", table)
        if any(r["noise_variance"] > 0 for r in rows) and (added or not (out / "fig5.png")
                                                          .exists()):
            fig5(rows, out / "fig5.png")
        report.write_report_safely(out)  # report.html with table.md and fig5.png
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
