"""Throughput of DLG: jgi vmapped over victims, jgi one victim at a time, PyTorch, in one run.

    python benchmarks/dlg_throughput.py                      # table, then one JSON line each
    python benchmarks/dlg_throughput.py --victims=8 --steps=5 --image-size=32 --json

DLG (:mod:`jgi.attacks.dlg`) on DLG's LeNet (Sigmoid, U(-0.5, 0.5)) against one-step
gradients of random images, with PyTorch-style L-BFGS (one ``LBFGS.step()`` = up to 20
inner iterations, history 100, no line search). A victim-iteration is one L-BFGS
*step* (DLG's unit: 300 of them per image); ``evals_per_s`` counts the objective
evaluations (each a gradient of the gradient distance) the steps made, since a step
ends early once a tolerance is met.

Implementations:

- ``jgi-vmap``: the runner's compiled chunk (:func:`jgi.attacks.runner.make_chunk`,
  ``--steps`` steps in a ``lax.scan``, ``vmap`` over all ``--victims`` inside each step,
  the inner L-BFGS loop a batched ``lax.while_loop``).
- ``jgi-loop``: the same chunk compiled for one victim, called once per victim from
  Python.
- ``torch-sequential``: ``torch.optim.LBFGS`` (lr 1, defaults) on one victim at a time,
  as DLG's code runs (``closure``: the dummy's gradient with ``create_graph=True``, the
  sum of squared differences, ``backward``), on the same LeNet weights, targets and
  initial dummies as jgi; the first loss is checked against jgi's before timing, and
  one untimed step of one victim warms PyTorch up (its first step is much slower).
  Skipped with a message when PyTorch is not importable (CPU wheel: ``pip install
  torch --index-url https://download.pytorch.org/whl/cpu``).

Every implementation runs from the same initial state in every repeat (the same
work). ``first call s`` is jgi's compilation plus one call, and PyTorch's warm-up step
of one victim. The implementations are timed interleaved, and the median of ``--repeats`` is
reported. Shared machines are noisy: compare ratios within one run.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jgi import fl, models  # noqa: E402
from jgi.attacks import dlg, runner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import side_by_side  # noqa: E402  (benchmarks/timing.py)

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

TORCH_MISSING = ("PyTorch is not importable here; torch-sequential is skipped (pip install "
                 "torch --index-url https://download.pytorch.org/whl/cpu to run it).")


def setup(victims: int, image_size: int, seed: int = 0, channels=(12, 12, 12),
          strides=(2, 2, 1)):
    """LeNet, params and one-step gradients of random images."""
    shape = (image_size, image_size, 3)
    model = models.get("lenet", channels=channels, strides=strides)
    params = model.init(jax.random.key(seed), shape)
    x = jax.random.uniform(jax.random.key(seed + 1), (victims, *shape))
    y = jnp.arange(victims, dtype=jnp.int32) % 10
    observation = jax.jit(lambda p, x, y: fl.observe_victims(
        model, p, x, y, fl.ClientRandomness())[0])(params, x, y)
    return model, params, observation.update, shape


def jgi_chunks(model, params, updates, shape, steps: int):
    """``(run_vmap, run_loop, first_losses)``: callables that run ``steps`` steps."""
    config = dlg.DLGConfig(max_iters=10 ** 6)
    problem = dlg.problem(model, shape, 10, config)
    victims = {"target": updates}
    context = {"params": params, "bounds": None}
    state = runner.init_state(problem, victims, context, jax.random.key(7))
    chunk = jax.jit(runner.make_chunk(problem, config.stopping(), steps, victim_tile=None))
    n = jax.tree.leaves(updates)[0].shape[0]
    pick = [jax.tree.map(lambda a, i=i: a[i:i + 1], (state, victims)) for i in range(n)]

    def evals(s):
        return int(np.sum(np.asarray(s.opt_state.func_evals)))

    def run_vmap():
        out = chunk(state, victims, context)
        jax.block_until_ready(out)
        return evals(out)

    def run_loop():
        total = 0
        for s, v in pick:
            out = chunk(s, v, context)
            jax.block_until_ready(out)
            total += evals(out)
        return total

    first = jax.jit(jax.vmap(lambda c, v: problem.objective(c, v, context,
                                                            jax.random.key(0))[0]))
    return run_vmap, run_loop, np.asarray(first(state.candidate, victims)), state.candidate


def torch_runner(params, updates, candidate, shape, steps: int, channels=(12, 12, 12),
                 strides=(2, 2, 1)):
    """``(run, first_losses)``: PyTorch LBFGS one victim at a time, DLG's closure."""
    fh, fw, cin = shape
    convs, tensors = [], {}
    for i, (cout, s) in enumerate(zip(channels, strides, strict=True)):
        fh, fw = (fh - 1) // s + 1, (fw - 1) // s + 1  # kernel 5, padding 2
        conv = torch.nn.Conv2d(cin, cout, 5, stride=s, padding=2)
        conv.weight.data = torch.from_numpy(
            np.asarray(params[f"conv{i}"]["w"]).transpose(3, 2, 0, 1).copy())
        conv.bias.data = torch.from_numpy(np.asarray(params[f"conv{i}"]["b"]).copy())
        convs += [conv, torch.nn.Sigmoid()]
        cin = cout
    body = torch.nn.Sequential(*convs)
    dense = torch.nn.Linear(cin * fh * fw, 10)

    def to_torch_dense(a):  # rows (h, w, c) -> (c, h, w), then (out, in)
        a = np.asarray(a)
        lead = a.shape[:-2]
        a = a.reshape(*lead, fh, fw, cin, 10)
        a = np.moveaxis(a, -2, -4).reshape(*lead, cin * fh * fw, 10)
        return np.swapaxes(a, -1, -2).copy()

    dense.weight.data = torch.from_numpy(to_torch_dense(params["dense"]["w"]))
    dense.bias.data = torch.from_numpy(np.asarray(params["dense"]["b"]).copy())
    net = torch.nn.Sequential(body, torch.nn.Flatten(), dense)
    n = np.asarray(updates["dense"]["b"]).shape[0]
    for i in range(n):
        t = []
        for j in range(len(channels)):
            t.append(torch.from_numpy(
                np.asarray(updates[f"conv{j}"]["w"][i]).transpose(3, 2, 0, 1).copy()))
            t.append(torch.from_numpy(np.asarray(updates[f"conv{j}"]["b"][i]).copy()))
        t.append(torch.from_numpy(to_torch_dense(updates["dense"]["w"][i])))
        t.append(torch.from_numpy(np.asarray(updates["dense"]["b"][i]).copy()))
        tensors[i] = t
    x0 = np.ascontiguousarray(np.asarray(candidate["x"]).transpose(0, 1, 4, 2, 3))  # V,1,C,H,W
    l0 = np.asarray(candidate["label_logits"])

    def closure_for(i, dx, dl, opt):
        def closure():
            if opt is not None:
                opt.zero_grad()
            pred = net(dx)
            loss = torch.mean(torch.sum(-torch.softmax(dl, -1) * torch.log_softmax(pred, -1), 1))
            grads = torch.autograd.grad(loss, net.parameters(), create_graph=True)
            diff = sum(((g - t) ** 2).sum() for g, t in zip(grads, tensors[i], strict=True))
            diff.backward()
            return diff
        return closure

    def first_losses():
        out = []
        for i in range(n):
            dx = torch.tensor(x0[i], requires_grad=True)
            dl = torch.tensor(l0[i], requires_grad=True)
            out.append(closure_for(i, dx, dl, None)().item())
        return np.asarray(out)

    def run(victims=None):
        total = 0
        for i in range(n if victims is None else victims):
            dx = torch.tensor(x0[i], requires_grad=True)
            dl = torch.tensor(l0[i], requires_grad=True)
            opt = torch.optim.LBFGS([dx, dl], lr=1)
            closure = closure_for(i, dx, dl, opt)
            for _ in range(steps):
                opt.step(closure)
            total += opt.state[dx]["func_evals"]
        return total

    return run, first_losses()


def measure(victims: int, steps: int, image_size: int, repeats: int, use_torch: bool,
            loop_victims: int, channels=(12, 12, 12), strides=(2, 2, 1)) -> list[dict]:
    model, params, updates, shape = setup(victims, image_size, 0, channels, strides)
    run_vmap, run_loop, jgi_first, candidate = jgi_chunks(model, params, updates, shape, steps)
    impls = {"jgi-vmap": run_vmap, "jgi-loop": run_loop}
    timed_victims = {"jgi-vmap": victims, "jgi-loop": victims}
    warmup = {}
    notes = []
    if use_torch and torch is not None:
        torch.set_num_threads(1)
        run_torch, torch_first = torch_runner(params, updates, candidate, shape, steps,
                                              channels, strides)
        np.testing.assert_allclose(torch_first, jgi_first, rtol=1e-3, atol=1e-6)
        nt = min(victims, loop_victims)
        impls["torch-sequential"] = lambda: run_torch(nt)
        warmup["torch-sequential"] = lambda: run_torch(1)  # PyTorch's lazy set-up
        timed_victims["torch-sequential"] = nt
    elif use_torch:
        notes.append(TORCH_MISSING)
    timings = side_by_side(impls, repeats, warmup)
    rows = []
    for name, t in timings.items():
        timed = timed_victims[name]
        rows.append({"impl": name, "victims": victims, "victims_timed": timed,
                     "steps": steps, "image_size": image_size,
                     "channels": list(channels), "strides": list(strides),
                     "victim_steps_per_s": timed * steps / t.seconds,
                     "evals_per_s": t.result / t.seconds, "seconds": t.seconds,
                     "first_call_s": t.first_call_s,
                     "torch_threads": 1 if "torch" in name else None,
                     "cpu_count": os.cpu_count(), "backend": jax.default_backend()})
    for note in notes:
        rows.append({"note": note})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| impl | victims (timed) | steps | victim-steps/s | evaluations/s | first call s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "note" in r:
            continue
        first = f"{r['first_call_s']:.1f}"
        lines.append(f"| {r['impl']} | {r['victims']} ({r['victims_timed']}) | {r['steps']} | "
                     f"{r['victim_steps_per_s']:.2f} | {r['evals_per_s']:.1f} | {first} |")
    lines += [f"\n{r['note']}" for r in rows if "note" in r]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="L-BFGS steps per timed call")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-victims", type=int, default=4,
                        help="victims PyTorch is timed on (its throughput is per victim)")
    parser.add_argument("--channels", default="12,12,12", help="LeNet channels per conv")
    parser.add_argument("--strides", default="2,2,1", help="LeNet strides per conv")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", action="store_true", help="JSON lines only")
    args = parser.parse_args(argv)
    if min(args.victims, args.steps, args.image_size, args.repeats, args.loop_victims) < 1:
        parser.error("victims, steps, image size, repeats and loop victims must be >= 1")
    channels = tuple(int(v) for v in args.channels.split(","))
    strides = tuple(int(v) for v in args.strides.split(","))
    rows = measure(args.victims, args.steps, args.image_size, args.repeats,
                   not args.no_torch, args.loop_victims, channels, strides)
    if not args.json:
        print(table(rows) + "\n")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
