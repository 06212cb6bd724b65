"""DLG and iDLG against single-image gradients: the study's single-gradient baseline.

    JGI_DATA_DIR=../shared/data python -m experiments.dlg_baseline --out=results/dlg
    python -m experiments.dlg_baseline --attacks=idlg --lbfgs=pytorch --images=4 --steps=50

NotEasy (Zhu, Huang, Xie 2024) Fig. 5: DLG on one CIFAR-10 image at a time, 10 runs,
recovers 9 of 10 (a white horse fails); Fig. 6: iDLG does better (correct labels). The
study shows grids only; this script measures them. Set-up (DLG's code, NotEasy Table II):
DLG's LeNet (``models.get("lenet")``: Sigmoid, U(-0.5, 0.5) init, one initialisation
for all images, from ``--seed``), inputs in [0, 1], each victim one image's one-step
gradient, 300 L-BFGS steps of lr 1.

Images: the first training image of each class (``--images`` of them, classes in
order), so the ten include a horse. Reconstructions are clipped to [0, 1] for the
metrics. "Recovered" means SSIM above ``--threshold`` (default 0.5, jgi's attack-success
threshold); the table also counts SSIM > 0.9.

Writes ``rows.json`` (one row per image, attack and L-BFGS semantics), ``table.md`` and
one image grid per attack and semantics (``grid_<attack>_<lbfgs>.png``) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgi import data, figures, fl, metrics, models, report
from jgi.attacks import dlg, lbfgs


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """One baseline run.

    Attributes:
      attacks: "dlg" and/or "idlg".
      semantics: L-BFGS semantics to run ("pytorch", "optax").
      images: how many victims (first training image of each class, then the next).
      steps: PyTorch-style L-BFGS steps (DLG: 300).
      optax_steps: optax L-BFGS iterations (one line-searched iteration each).
      image_size: side of the (resized) square input; 32 is CIFAR-10's own.
      channels, strides, kernel_size, activation, init: the LeNet (DLG's by default).
      threshold: SSIM above which an image counts as recovered.
      seed: model initialisation (key ``seed``) and dummies (key ``seed + 1``).
      dataset, data_dir, data_source: where the images come from.
    """

    attacks: tuple[str, ...] = ("dlg", "idlg")
    semantics: tuple[str, ...] = ("pytorch", "optax")
    images: int = 10
    steps: int = 300
    optax_steps: int = 300
    image_size: int = 32
    channels: tuple[int, ...] = (12, 12, 12)
    strides: tuple[int, ...] = (2, 2, 1)
    kernel_size: int = 5
    activation: str = "sigmoid"
    init: str = "uniform"
    threshold: float = metrics.ASR_THRESHOLD
    seed: int = 0
    dataset: str = "cifar10"
    data_dir: str | None = None
    data_source: str = "auto"

    def __post_init__(self):
        bad = sorted(set(self.attacks) - {"dlg", "idlg"})
        if bad or not self.attacks:
            raise ValueError(f"attacks must be among dlg, idlg; got {self.attacks}.")
        bad = sorted(set(self.semantics) - set(lbfgs.SEMANTICS))
        if bad or not self.semantics:
            raise ValueError(f"L-BFGS semantics must be among {', '.join(lbfgs.SEMANTICS)}; "
                             f"got {self.semantics}.")
        if self.images < 1 or self.steps < 1 or self.optax_steps < 1:
            raise ValueError("images, steps and optax_steps must be >= 1.")

    def model(self) -> models.Model:
        return models.get("lenet", channels=self.channels, strides=self.strides,
                          kernel_size=self.kernel_size, activation=self.activation,
                          init=self.init)


def pick_images(dataset: data.Dataset, n: int) -> np.ndarray:
    """Indices of the first training image of each class, in class order, repeated."""
    y = np.asarray(dataset.y_train)
    classes = np.unique(y)
    order = [np.flatnonzero(y == c) for c in classes]
    picked = []
    rank = 0
    while len(picked) < n:
        for idx in order:
            if rank < len(idx) and len(picked) < n:
                picked.append(int(idx[rank]))
        rank += 1
    return np.asarray(picked)


def run(config: BaselineConfig, out: str | None = None, progress: bool = True) -> list[dict]:
    """Runs every attack x semantics on the same victims; returns one row per image."""
    dataset = data.load(config.dataset, data_dir=config.data_dir, source=config.data_source)
    idx = pick_images(dataset, config.images)
    x = jnp.asarray(dataset.x_train[idx])
    y = jnp.asarray(dataset.y_train[idx], jnp.int32)
    s = config.image_size
    if x.shape[1:3] != (s, s):
        x = jnp.clip(jax.image.resize(x, (x.shape[0], s, s, x.shape[3]), "linear"), 0, 1)
    shape = tuple(x.shape[1:])
    model = config.model()
    params = model.init(jax.random.key(config.seed), shape)
    observation, _ = fl.observe_victims(model, params, x, y, fl.ClientRandomness())
    rows = []
    for attack in config.attacks:
        for semantics in config.semantics:
            steps = config.steps if semantics == "pytorch" else config.optax_steps
            cfg = dlg.DLGConfig(max_iters=steps, lbfgs=semantics,
                                labels="joint" if attack == "dlg" else "idlg")
            t0 = time.perf_counter()
            result = dlg.reconstruct_observation(
                model, observation, jax.random.key(config.seed + 1), cfg, input_shape=shape,
                progress=f"{attack}/{semantics}" if progress else False)
            seconds = time.perf_counter() - t0
            rec = np.clip(result.images[:, 0], 0.0, 1.0)
            ssim, psnr, mse = (metrics.ssim(x, rec), metrics.psnr(x, rec), metrics.mse(x, rec))
            for i in range(len(idx)):
                rows.append({
                    "attack": attack, "lbfgs": semantics, "steps": steps,
                    "image_index": int(idx[i]), "label": int(y[i]),
                    "predicted_label": int(result.labels[i, 0]),
                    "ssim": float(ssim[i]), "psnr": float(psnr[i]), "mse": float(mse[i]),
                    "best_loss": float(result.attack.best_loss[i]),
                    "iterations": int(result.attack.iterations[i]),
                    "wall_seconds": seconds, "compile_seconds": result.attack.compile_seconds,
                })
            if out is not None:
                os.makedirs(out, exist_ok=True)
                figures.reconstruction_grid(
                    np.asarray(x), rec, ssim, os.path.join(out, f"grid_{attack}_{semantics}.png"),
                    title=f"{attack.upper()}, {semantics} L-BFGS, {steps} steps, "
                          f"{dataset.info.name} {s}x{s}, LeNet ({config.activation}, "
                          f"{config.init})", columns=10)
    if out is not None:
        with open(os.path.join(out, "rows.json"), "w") as f:
            json.dump({"config": dataclasses.asdict(config), "data": dataset.describe(),
                       "rows": rows}, f, indent=1)
        with open(os.path.join(out, "table.md"), "w") as f:
            f.write(markdown(rows, config.threshold) + "\n")
        report.write_report_safely(out)  # report.html: table.md and the grids
    return rows


def markdown(rows: Sequence[dict], threshold: float) -> str:
    """One line per attack and semantics: means, recovered counts, label accuracy, time."""
    lines = ["| attack | L-BFGS | steps | images | SSIM mean | PSNR mean | MSE mean | "
             f"SSIM > {threshold:g} | SSIM > 0.9 | label acc. | wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["attack"], r["lbfgs"]), []).append(r)
    for (attack, semantics), rs in groups.items():
        ssim = np.array([r["ssim"] for r in rs])
        psnr = np.array([r["psnr"] for r in rs])
        psnr = psnr[np.isfinite(psnr)]
        lines.append(
            f"| {attack} | {semantics} | {rs[0]['steps']} | {len(rs)} | {ssim.mean():.3f} | "
            f"{psnr.mean() if psnr.size else float('inf'):.2f} | "
            f"{np.mean([r['mse'] for r in rs]):.4f} | {int(np.sum(ssim > threshold))} | "
            f"{int(np.sum(ssim > 0.9))} | "
            f"{np.mean([r['label'] == r['predicted_label'] for r in rs]):.2f} | "
            f"{rs[0]['wall_seconds']:.0f} |")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default="dlg,idlg")
    parser.add_argument("--lbfgs", default="pytorch,optax", help="L-BFGS semantics")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--optax-steps", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", default="12,12,12")
    parser.add_argument("--strides", default="2,2,1")
    parser.add_argument("--kernel-size", type=int, default=5)
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--init", default="uniform")
    parser.add_argument("--threshold", type=float, default=metrics.ASR_THRESHOLD)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="cifar10", choices=sorted(data.DATASETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    parser.add_argument("--out", default=None, help="folder for rows.json, table.md, grids")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = BaselineConfig(
            attacks=tuple(args.attacks.split(",")), semantics=tuple(args.lbfgs.split(",")),
            images=args.images, steps=args.steps, optax_steps=args.optax_steps,
            image_size=args.image_size, channels=_ints(args.channels),
            strides=_ints(args.strides), kernel_size=args.kernel_size,
            activation=args.activation, init=args.init, threshold=args.threshold,
            seed=args.seed, dataset=args.dataset, data_dir=args.data_dir,
            data_source=args.data_source)
        config.model()
    except (ValueError, data.DataError) as e:
        print(f"error: {e}")
        return 2
    rows = run(config, args.out, progress=not args.no_progress)
    print(markdown(rows, config.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
