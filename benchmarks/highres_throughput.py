"""The Health attack's objective per resolution: jgi's formulations and a PyTorch reference.

    python benchmarks/highres_throughput.py --resolutions=64,128,256,512

One evaluation of the attack's objective, its value and
its gradient in the image (what every L-BFGS inner iteration computes), for one victim
on the Health LeNet (``lenet(**HEALTH_OPTIONS)``, Sigmoid) at each side, the paper's
loss at the resolution's weights (:func:`jgi.attacks.highres.for_resolution`: the sum of
squared gradient differences + squared TV + six-norm), against the gradient of a random
image, from an N(0, 1) dummy. Side by side, interleaved, median of ``--repeats``:

- ``jgi patches/double-reverse``: the plain formulation (patch convolutions, autodiff
  reverse over the reverse pass that computes the dummy's gradient);
- ``jgi lax/double-reverse``: the same with ``lax.conv_general_dilated``;
- ``jgi patches/jvp`` and ``jgi lax/jvp``: the image derivative as reverse over a
  parameter-space JVP (:func:`jgi.attacks.highres.gradient_term`, ``mode="jvp"``);
  patches/jvp is what ``experiments.highres`` runs by default (a lone evaluation, as
  here, favours lax; inside the vmapped runner lax was 2x slower, docs/results/highres.md);
- ``torch``: the objective written the way the paper's code (built on DLG's) writes it:
  ``torch.nn`` LeNet (NCHW), ``torch.autograd.grad(loss, net.parameters(),
  create_graph=True)``, the sum of squared differences, TV and six-norm on the dummy,
  ``.backward()``; the same weights (transposed to PyTorch's layouts, the classifier's
  rows permuted from (H, W, C) to (C, H, W) order), the same target gradient and dummy.
  Optional: without ``import torch`` the line says it was skipped. torch uses its
  default intra-op threads (reported).

Every implementation's loss is checked against the plain one (the first of
``--impls``; relative 1e-3, :data:`LOSS_RTOL`) and its
image gradient is compared (the largest difference relative to the largest entry,
reported). FLOP/s: the FLOPs of one evaluation from XLA's ``cost_analysis()`` of that
compiled jgi function; the torch line is credited with the FLOPs of ``jgi
lax/double-reverse`` (the same algorithm: reverse over reverse of the same
convolutions). The peak is a float32 ``jnp.dot`` of two ``--matmul-size`` square
matrices timed in the same run (2 n^3 FLOPs).

Whole L-BFGS steps (up to 20 evaluations each, plus the two-loop recursion over the
history) are timed by ``experiments.highres`` per row; vmapping victims gained nothing
measurable on 2 cores (docs/results/highres.md, an earlier version of this script).

Shared machines are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi.attacks import highres
from jgi.fl.client import client_update
from jgi.models.lenet import HEALTH_OPTIONS, lenet

try:
    import torch
    from torch.nn import functional as F
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

TORCH_MISSING = ("torch: skipped, PyTorch is not importable here (pip install torch "
                 "--index-url https://download.pytorch.org/whl/cpu to run it)")
JGI_IMPLS = {"jgi patches/double-reverse": ("patches", "double-reverse"),
             "jgi lax/double-reverse": ("lax", "double-reverse"),
             "jgi patches/jvp": ("patches", "jvp"),
             "jgi lax/jvp": ("lax", "jvp")}
TORCH_FLOPS_FROM = "jgi lax/double-reverse"
# float32 sums over 10^5 gradient entries in different orders: torch's loss differed from
# jgi's by 1.6e-4 relative at 256^2 (jgi's formulations among themselves: < 1e-6).
LOSS_RTOL = 1e-3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import side_by_side  # noqa: E402  (benchmarks/timing.py)


def _problem(side: int, seed: int = 0):
    shape = (side, side, 3)
    model = lenet(**HEALTH_OPTIONS)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(seed), shape)
    x = jax.random.uniform(jax.random.key(seed + 1), (1, *shape))
    y = jnp.asarray([1], jnp.int32)
    target = jax.jit(lambda p, x: client_update(model, p, x, y))(params, x)
    dummy = jax.random.normal(jax.random.key(seed + 2), (1, *shape))
    return shape, params, y, target, dummy


def jgi_objective(side: int, conv_impl: str, mode: str, seed: int = 0):
    """``(evaluate, flops)``: one jitted value-and-gradient call and XLA's FLOP count."""
    shape, params, y, target, dummy = _problem(side, seed)
    model = lenet(**HEALTH_OPTIONS, conv_impl=conv_impl)
    config = highres.for_resolution(side)

    def loss(d):
        return highres.total_loss(config, highres.loss_terms(
            model, params, d, y, target, config.gradient_reduction, mode))

    compiled = jax.jit(jax.value_and_grad(loss)).lower(dummy).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost

    def evaluate():
        value, grad = compiled(dummy)
        return float(value), np.asarray(grad)

    return evaluate, float(cost["flops"])


def torch_objective(side: int, seed: int = 0):
    """One evaluation as the paper's PyTorch code computes it (see the module docstring)."""
    shape, params, y, target, dummy = _problem(side, seed)
    config = highres.for_resolution(side)
    layers = []
    cin, size = 3, side
    for i, stride in enumerate(HEALTH_OPTIONS["strides"]):
        conv = torch.nn.Conv2d(cin, 12, 5, stride=stride, padding=2)
        conv.weight.data = torch.from_numpy(
            np.ascontiguousarray(np.asarray(params[f"conv{i}"]["w"]).transpose(3, 2, 0, 1)))
        conv.bias.data = torch.from_numpy(np.asarray(params[f"conv{i}"]["b"]).copy())
        layers += [conv, torch.nn.Sigmoid()]
        cin, size = 12, (size + 4 - 5) // stride + 1
    dense = torch.nn.Linear(cin * size * size, 2)

    def to_torch_dense(a):  # rows (h, w, c) -> (c, h, w), then (out, in)
        a = np.asarray(a).reshape(size, size, cin, -1).transpose(2, 0, 1, 3)
        return np.ascontiguousarray(a.reshape(cin * size * size, -1).T)

    dense.weight.data = torch.from_numpy(to_torch_dense(params["dense"]["w"]))
    dense.bias.data = torch.from_numpy(np.asarray(params["dense"]["b"]).copy())
    net = torch.nn.Sequential(*layers, torch.nn.Flatten(), dense)
    targets = []
    for i in range(len(HEALTH_OPTIONS["strides"])):
        targets.append(torch.from_numpy(np.ascontiguousarray(
            np.asarray(target[f"conv{i}"]["w"]).transpose(3, 2, 0, 1))))
        targets.append(torch.from_numpy(np.asarray(target[f"conv{i}"]["b"]).copy()))
    targets += [torch.from_numpy(to_torch_dense(target["dense"]["w"])),
                torch.from_numpy(np.asarray(target["dense"]["b"]).copy())]
    start = torch.from_numpy(np.ascontiguousarray(np.asarray(dummy).transpose(0, 3, 1, 2)))
    label = torch.from_numpy(np.asarray(y, np.int64))

    def evaluate():
        d = start.clone().requires_grad_(True)
        loss = F.cross_entropy(net(d), label)
        grads = torch.autograd.grad(loss, net.parameters(), create_graph=True)
        grad_diff = sum(((g - t) ** 2).sum() for g, t in zip(grads, targets, strict=True))
        tv = ((d[:, :, :, 1:] - d[:, :, :, :-1]) ** 2).sum() + \
            ((d[:, :, 1:, :] - d[:, :, :-1, :]) ** 2).sum()
        total = config.alpha_g * grad_diff + config.alpha_tv * tv + \
            config.alpha_norm * (d ** 6).sum()
        total.backward()
        return float(total.item()), d.grad.numpy().transpose(0, 2, 3, 1)

    return evaluate


def matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of a float32 ``jnp.dot`` of two n x n matrices (median of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    t = side_by_side({"dot": lambda: jax.block_until_ready(dot(a, a))}, repeats)["dot"]
    return 2.0 * n ** 3 / t.seconds


def measure_objective(side: int, repeats: int, use_torch: bool, peak: float,
                      names: tuple[str, ...] = tuple(JGI_IMPLS)) -> list[dict]:
    """One row per implementation; the first of ``names`` is the reference ("plain")."""
    impls, flops = {}, {}
    for name in names:
        impls[name], flops[name] = jgi_objective(side, *JGI_IMPLS[name])
    notes = {}
    if use_torch and torch is not None:
        impls["torch"] = torch_objective(side)
        if TORCH_FLOPS_FROM not in flops:
            flops[TORCH_FLOPS_FROM] = jgi_objective(side, *JGI_IMPLS[TORCH_FLOPS_FROM])[1]
        flops["torch"] = flops[TORCH_FLOPS_FROM]
        notes["torch"] = f"FLOPs of {TORCH_FLOPS_FROM}; {torch.get_num_threads()} threads"
    timed = side_by_side(impls, repeats)
    plain = names[0]
    ref_loss, ref_grad = timed[plain].result
    scale = float(np.max(np.abs(ref_grad)))
    rows = []
    for name, t in timed.items():
        loss, grad = t.result
        if abs(loss - ref_loss) > LOSS_RTOL * abs(ref_loss):
            raise AssertionError(f"{name}'s loss {loss} differs from {plain}'s {ref_loss} by "
                                 f"more than {LOSS_RTOL:g} relative at {side}^2.")
        rows.append({"impl": name, "resolution": side,
                     "variables": side * side * 3, "seconds": t.seconds,
                     "first_call_s": t.first_call_s, "loss": loss,
                     "loss_rel_diff": abs(loss - ref_loss) / abs(ref_loss),
                     "grad_rel_diff": float(np.max(np.abs(grad - ref_grad))) / scale,
                     "gflop": flops[name] / 1e9, "gflops_per_s": flops[name] / t.seconds / 1e9,
                     "of_peak": flops[name] / t.seconds / peak,
                     "speedup_vs_plain": timed[plain].seconds / t.seconds, "plain": plain,
                     "note": notes.get(name, "FLOPs: XLA cost_analysis"),
                     "cpu_count": os.cpu_count(), "backend": jax.default_backend()})
    return rows


def objective_table(rows: list[dict], peak: float, matmul: int) -> str:
    lines = [f"matmul peak (float32 jnp.dot, {matmul}^2): {peak / 1e9:.1f} GFLOP/s", "",
             "| side | impl | s per eval (median) | x plain | GFLOP/eval | GFLOP/s | of peak "
             "| first call s | loss | loss rel. diff | grad rel. diff |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['resolution']} | {r['impl']} | {r['seconds']:.3g} | "
                     f"{r['speedup_vs_plain']:.2f} | {r['gflop']:.3g} | "
                     f"{r['gflops_per_s']:.3g} | {r['of_peak']:.1%} | "
                     f"{r['first_call_s']:.3g} | {r['loss']:.6g} | {r['loss_rel_diff']:.1e} | "
                     f"{r['grad_rel_diff']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", default="32,64,128")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--impls", default=",".join(JGI_IMPLS),
                    help="jgi formulations, comma-separated; the first is the reference")
    ap.add_argument("--json", action="store_true", help="only the JSON lines")
    args = ap.parse_args(argv)
    sides = [int(v) for v in args.resolutions.split(",") if v]
    if not sides or min(sides) < 8 or args.repeats < 1 or args.matmul_size < 1:
        print("error: resolutions must be sides >= 8; repeats and matmul-size >= 1.")
        return 2
    names = tuple(v for v in args.impls.split(",") if v)
    if not names or set(names) - set(JGI_IMPLS):
        print(f"error: impls must be among {', '.join(JGI_IMPLS)}; got {args.impls!r}.")
        return 2
    peak = matmul_peak(args.matmul_size, max(args.repeats, 3))
    rows = [row for side in sides for row in measure_objective(
        side, args.repeats, not args.no_torch, peak, names)]
    text = objective_table(rows, peak, args.matmul_size)
    rows.append({"impl": "matmul-peak", "n": args.matmul_size, "gflops_per_s": peak / 1e9})
    if not args.no_torch and torch is None:
        text += "\n" + TORCH_MISSING
        rows.append({"impl": "torch", "skipped": TORCH_MISSING})
    if not args.json:
        print(text)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
