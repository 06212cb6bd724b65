"""Throughput of one attack step: jgi (vmapped, looped) and PyTorch, side by side in one run.

    python benchmarks/attack_throughput.py              # table, then one JSON line each
    python benchmarks/attack_throughput.py --json       # JSON lines only
    python benchmarks/attack_throughput.py --attacks=ig,dia,vbia,cdia --victims=8,128
    python benchmarks/attack_throughput.py --models=cnn --shapes=32x32x3 --impls=jgi-vmap

Shared machines are noisy, so every implementation of one configuration (model, input
shape, attack, victim count) is built first and then timed *interleaved*: repeat r of
each implementation runs before repeat r + 1 of any, the order rotating from one repeat
to the next, with ``--pause`` seconds of idle before each timed call; the median over
``--repeats`` is reported. Compare the ratios within a run, not absolute numbers across runs.

Implementations (``--impls``):

- ``jgi-vmap``: the runner's compiled chunk (:func:`jgi.attacks.runner.make_chunk`:
  ``lax.scan`` over ``--iters`` steps, ``vmap`` over all victims inside each step, state
  donated and fed back as the runner does).
- ``jgi-vmap-plain``: the same without materialising the gradient once per step
  (``make_chunk(..., materialize_gradient=False)``), to measure that optimisation.
- ``jgi-vmap-untiled``: the same without splitting the victims into tiles of
  :data:`jgi.attacks.runner.CPU_VICTIM_TILE` on CPU (``victim_tile=None``).
- ``jgi-vmap-laxconv`` (CNN only): the same with ``lax.conv_general_dilated``
  convolutions, whose per-victim weight gradients XLA lowers to grouped convolutions.
- ``jgi-vmap-cvbfused`` (attacks on CVB): the same with CVB's fused formulation
  (:func:`jgi.models.bottleneck.cvb_apply` with ``fused=True``: one convolution for
  ``mu`` and ``sigma``, the 1x1 decoder as a matmul), switched on only while the chunk
  is traced (:func:`cvb_fused`).
- ``jgi-loop``: the same compiled chunk for one victim, called once per victim from
  Python (one victim at a time, as most attack code runs).
- ``torch-sequential``, ``torch-func-vmap`` and ``torch-func-vmap-compile`` (IG on the
  CNN; skipped with a note when PyTorch is not importable): see
  ``benchmarks/torch_reference.py``. They run on the same parameters, targets and
  initial images as jgi, and their first losses and gradients are checked against
  jgi's before timing; the compiled one also against the uncompiled ``torch.func``
  function (``compiled_vs_eager_max_abs``: loss, image gradient). The compiled one is
  not in the default ``--impls``: inductor takes minutes per victim count on 2 cores.

PyTorch gets its best thread count: each of ``--torch-threads`` (default 1 and all cores)
is tried for one step and the fastest is timed (``torch_threads`` in the record). On a
loaded machine OpenMP's spinning threads can make two threads many times slower than one.

Loop implementations (``jgi-loop``, ``torch-sequential``) have a throughput independent
of the victim count; they are timed on ``min(victims, --loop-victims)`` victims
(``victims_timed`` in the record).

Models (``--models``): every one of cnn, resnet18 and vit that ``jgi.models.MODELS``
registers (the others are skipped with a note). The CNN runs at every ``--victims``;
the heavier models, unless ``--victims`` is given, at 1 and 8 victims only, to keep the
default run to a few minutes on two cores.

Attacks (``--attacks``), each against the defenses it targets: ``ig`` (no defense),
``dia`` (dropout), ``vbia`` (CVB), ``cdia`` (dropout + pruning + CVB; CDIA estimates
the masks and eps and applies the observed pruning mask).

Federated training (``--fl-stacks``, default ``none;dp``; ``--fl-stacks=`` skips it):
one FedAvg round (:func:`jgi.fedavg.make_round`: every client's local epoch of Adam
steps, vmapped over ``--fl-clients`` clients, then the average) on ``--fl-batches``
batches of 64 random images per client, for each model and shape; reported as
``samples_per_s`` (training examples per second over all clients) with ``impl``
``jgi-fedavg`` and the stack in ``defenses``.

Reported per measurement (one JSON line each): ``victim_iters_per_s`` (median),
``compile_s`` (trace + compile of the chunk; null for eager PyTorch),
``peak_memory_mb`` (jgi: XLA's memory analysis of the compiled chunk, arguments +
outputs + temporaries - donated aliases; PyTorch: growth of the process's peak RSS over
the first steps, a lower bound), ``flops_per_victim_iter`` (XLA's cost analysis of the
compiled chunk divided by the victims: a ``lax.scan`` body is counted once, so this is
one step; the PyTorch rows carry jgi's count for the same step), and ``peak_fraction``
(achieved FLOP/s over the float32 matmul peak measured at the start of the same run).

``--profile``: every ``jgi-vmap*`` chunk is also traced (:func:`profile_chunk`) and
its time printed by the source line that emitted each XLA operation and by operation
kind, so the next bottleneck is named (``profile`` in the record).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jgi import defenses, fl, models
from jgi.attacks import ATTACKS, ig, mimic, runner
from jgi.fl import fedavg
from jgi.models import bottleneck

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_reference  # noqa: E402  pylint: disable=g-import-not-at-top

SHAPES = {"28x28x1": (28, 28, 1), "32x32x3": (32, 32, 3)}
BENCH_MODELS = ("cnn", "resnet18", "vit")
HEAVY_DEFAULT_VICTIMS = (1, 8)
ATTACK_STACKS = {"ig": "none", "dia": "dropout", "vbia": "cvb", "cdia": "dropout,prune,cvb"}
IMPLS = ("jgi-vmap", "jgi-loop", "jgi-vmap-plain", "jgi-vmap-untiled", "jgi-vmap-laxconv",
         "jgi-vmap-cvbfused", "torch-sequential", "torch-func-vmap", "torch-func-vmap-compile")
DEFAULT_IMPLS = ("jgi-vmap", "jgi-loop", "torch-sequential", "torch-func-vmap")


def measure_matmul_peak(n: int = 2048, repeats: int = 7) -> float:
    """Float32 FLOP/s of a large matmul on the default device (best of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times)


# ---------------------------------------------------------------------------- memory


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
    except OSError:
        pass


def _xla_memory_mb(compiled) -> float | None:
    try:
        m = compiled.memory_analysis()
        total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes)
        return total / 2 ** 20
    except Exception:  # pylint: disable=broad-except
        return None


def _xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


# ---------------------------------------------------------------------------- setups


@dataclasses.dataclass
class Setup:
    """One configuration's attack, victims and initial state (jgi objects)."""

    model_name: str
    shape: tuple[int, int, int]
    attack: str
    num_victims: int
    model: Any
    params: Any
    updates: Any
    labels: jax.Array
    problem: runner.Problem
    stopping: runner.StoppingRule
    victims: Any
    context: Any
    state: runner.RunnerState
    tv_weight: float


def build_setup(model_name: str, shape, attack: str, num_victims: int,
                conv_impl: str | None = None) -> Setup:
    stack = defenses.from_names(ATTACK_STACKS[attack])
    options = stack.model_options()
    if conv_impl is not None:
        options["conv_impl"] = conv_impl
    model = models.get(model_name, **options)
    params = model.init(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (num_victims, *shape))
    y = jnp.arange(num_victims) % 10
    client = fl.sample_victim_randomness(jax.random.key(3), model, params, stack, shape,
                                         num_victims)
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, client, stack))(params)
    cfg = ig.IGConfig(tv_weight=ig.TV_WEIGHTS.get(model_name, 0.01))
    if attack == "ig":
        problem = ig.problem(model, shape, cfg)
    else:
        problem = mimic.problem(model, stack, ATTACKS[attack](stack), shape, params, cfg)
    victims = {"target": updates, "label": y}
    context = {"params": params, "bounds": None}
    state = runner.init_state(problem, victims, context, jax.random.key(2))
    return Setup(model_name, tuple(shape), attack, num_victims, model, params, updates, y,
                 problem, cfg.stopping(), victims, context, state, cfg.tv_weight)


def _take(tree, i, n=1):
    return jax.tree.map(lambda a: a[i:i + n], tree)


# ---------------------------------------------------------------------------- impls


class JgiVmap:
    """The runner's chunk over all victims, state donated and chained."""

    memory_source = "xla"

    def __init__(self, setup: Setup, iters: int, loop_victims: int,
                 materialize_gradient: bool = True, tiled: bool = True):
        del loop_victims
        self.victims_timed = setup.num_victims
        self.victims, self.context = setup.victims, setup.context
        self.state = jax.tree.map(jnp.copy, setup.state)
        tile = runner.default_victim_tile() if tiled else None
        chunk = jax.jit(runner.make_chunk(setup.problem, setup.stopping, iters,
                                          materialize_gradient=materialize_gradient,
                                          victim_tile=tile),
                        donate_argnums=(0,))
        t = time.perf_counter()
        self.compiled = chunk.lower(self.state, self.victims, self.context).compile()
        self.compile_s = time.perf_counter() - t
        self.flops_per_victim_iter = _xla_flops(self.compiled) / setup.num_victims
        self.peak_memory_mb = _xla_memory_mb(self.compiled)

    def __call__(self):
        self.state = self.compiled(self.state, self.victims, self.context)
        jax.block_until_ready(self.state)


class JgiLoop:
    """The one-victim chunk called once per victim."""

    memory_source = "xla"

    def __init__(self, setup: Setup, iters: int, loop_victims: int):
        self.victims_timed = min(setup.num_victims, loop_victims)
        self.context = setup.context
        self.singles = [[_take(setup.state, i), _take(setup.victims, i)]
                        for i in range(self.victims_timed)]
        chunk = jax.jit(runner.make_chunk(setup.problem, setup.stopping, iters),
                        donate_argnums=(0,))
        t = time.perf_counter()
        self.compiled = chunk.lower(*self.singles[0], self.context).compile()
        self.compile_s = time.perf_counter() - t
        self.flops_per_victim_iter = _xla_flops(self.compiled)
        self.peak_memory_mb = _xla_memory_mb(self.compiled)

    def __call__(self):
        for single in self.singles:
            single[0] = self.compiled(single[0], single[1], self.context)
        jax.block_until_ready(self.singles[-1][0])


class TorchImpl:
    """A PyTorch attack from ``torch_reference`` on the same data as ``setup``.

    Built once; :meth:`set_threads` picks the intra-op thread count (the run tries each
    of ``--torch-threads`` on the built object, so a compiled variant compiles once).
    Its first losses and image gradients (at the shared initial images, before any
    step) are kept in ``first`` for the check against jgi, and for the compiled variant
    ``compiled_error`` (max |compiled - eager| of loss and gradient).
    """

    memory_source = "rss"

    def __init__(self, impl: str, setup: Setup, iters: int, loop_victims: int,
                 threads: int, backend: str | None = None):
        self.threads = threads
        torch_reference.torch.set_num_threads(threads)
        sequential = impl == "torch-sequential"
        self.victims_timed = min(setup.num_victims, loop_victims) if sequential else \
            setup.num_victims
        self.iters = iters
        n = self.victims_timed
        _reset_peak_rss()
        rss0 = _status_mb("VmRSS")
        kwargs = {"backend": backend} if backend and impl in torch_reference.COMPILED_IMPLS \
            else {}
        self.attack = torch_reference.build(
            impl, setup.params, _take(setup.updates, 0, n), _take(setup.state.candidate["x"],
                                                                   0, n),
            setup.labels[:n], setup.shape, setup.tv_weight, **kwargs)
        self.compile_s = getattr(self.attack, "compile_s", None)
        self.compiled_error = (self.attack.compiled_error()
                               if impl in torch_reference.COMPILED_IMPLS else None)
        self.first = torch_reference.attack_losses(self.attack)
        self.attack.step(1)  # warm-up
        peak = _status_mb("VmHWM")
        self.peak_memory_mb = None if rss0 is None or peak is None else peak - rss0
        self.flops_per_victim_iter = float("nan")

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def __call__(self):
        torch_reference.torch.set_num_threads(self.threads)
        self.attack.step(self.iters)


@contextlib.contextmanager
def cvb_fused():
    """Traces CVB with ``fused=True`` inside the block (a benchmark-only switch: the
    models call ``jgi.models.bottleneck.cvb_apply`` at trace time)."""
    original = bottleneck.cvb_apply
    bottleneck.cvb_apply = functools.partial(original, fused=True)
    try:
        yield
    finally:
        bottleneck.cvb_apply = original


def make_impl(impl: str, setup_for: Callable[[str | None], Setup], iters: int,
              loop_victims: int, torch_threads: int | None = None,
              torch_backend: str | None = None):
    if impl == "jgi-vmap":
        return JgiVmap(setup_for(None), iters, loop_victims)
    if impl == "jgi-vmap-plain":
        return JgiVmap(setup_for(None), iters, loop_victims, materialize_gradient=False)
    if impl == "jgi-vmap-untiled":
        return JgiVmap(setup_for(None), iters, loop_victims, tiled=False)
    if impl == "jgi-vmap-laxconv":
        return JgiVmap(setup_for("lax"), iters, loop_victims)
    if impl == "jgi-vmap-cvbfused":
        setup = setup_for(None)
        with cvb_fused():
            return JgiVmap(setup, iters, loop_victims)
    if impl == "jgi-loop":
        return JgiLoop(setup_for(None), iters, loop_victims)
    return TorchImpl(impl, setup_for(None), iters, loop_victims, torch_threads,
                     torch_backend)


def skip_reason(impl: str, model_name: str, attack: str) -> str | None:
    if impl == "jgi-vmap-laxconv" and model_name != "cnn":
        return "conv_impl='lax' is a CNN option"
    if impl == "jgi-vmap-cvbfused" and "cvb" not in ATTACK_STACKS[attack]:
        return "the attack's stack has no CVB"
    if impl.startswith("torch-"):
        if not torch_reference.available():
            return torch_reference.why_unavailable()
        if model_name != "cnn" or attack != "ig":
            return "the PyTorch reference implements IG on the CNN only"
    return None


def torch_check(setup: Setup, built: dict) -> dict[str, float]:
    """Max |jgi - PyTorch| of the first image gradients, on up to 4 victims.

    Each built PyTorch implementation's ``first`` (its loss and image gradient at the
    shared initial images) is asserted equal to jgi's (``rtol`` 1e-4, as
    :func:`torch_reference.check_against_jgi`).
    """
    import numpy as np  # pylint: disable=g-import-not-at-top

    n = min(setup.num_victims, 4)
    victims = _take(setup.victims, 0, n)
    x0 = _take(setup.state.candidate["x"], 0, n)

    def loss(x, victim):
        return setup.problem.objective({"x": x}, victim, setup.context, jax.random.key(0))[0]

    losses, grads = jax.jit(jax.vmap(jax.value_and_grad(loss)))(x0, victims)
    losses, grads = np.asarray(losses), np.asarray(grads)
    errors = {}
    for (impl, _), b in built.items():
        if not impl.startswith("torch-"):
            continue
        t_loss, t_grad = b.first[0][:n], b.first[1][:n]
        np.testing.assert_allclose(t_loss, losses, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(t_grad, grads, rtol=1e-4, atol=1e-5)
        errors[impl] = float(np.max(np.abs(t_grad - grads)))
    return errors


# ---------------------------------------------------------------------------- profile


def _hlo_tables(hlo_text: str) -> dict[str, dict[int, str]]:
    """The FileNames / FunctionNames / FileLocations / StackFrames tables of HLO text."""
    tables: dict[str, dict[int, str]] = {}
    current = None
    for line in hlo_text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
            continue
        if current is not None:
            head, _, rest = line.partition(" ")
            if not head.isdigit():
                current = None
                continue
            current[int(head)] = rest.strip().strip('"')
    return tables


def _field(entry: str, name: str) -> int:
    import re  # pylint: disable=g-import-not-at-top
    m = re.search(rf"{name}=(\d+)", entry)
    return int(m.group(1)) if m else 0


def hlo_sources(hlo_text: str, depth: int = 2) -> dict[str, tuple[str, str]]:
    """Instruction name -> (source, op) from the compiled module's metadata.

    ``source`` is the innermost ``depth`` frames of the Python stack that emitted the
    instruction (``file:function:line``, innermost first); ``op`` is the last part of
    its ``op_name`` (``dot_general``, ``pad``, ...) prefixed by how deep it sits in the
    nested derivatives (``jvp(``/``transpose(`` in the name stack): ``fwd`` (at most one:
    the objective's forward pass), ``d1`` (two: the dummy update's backward pass) or
    ``d2`` (three or more: the objective's gradient through that backward pass, the
    double backward). A fusion carries its root instruction's metadata, so its whole
    time goes to the root's source (e.g. Adam's update fused into the freeze's select).
    A frame's printed ``parent_frame_id`` is its parent's id plus one (0: none).
    """
    import re  # pylint: disable=g-import-not-at-top
    t = _hlo_tables(hlo_text)
    files, funcs = t.get("FileNames", {}), t.get("FunctionNames", {})
    locs, frames = t.get("FileLocations", {}), t.get("StackFrames", {})

    def loc_name(loc_id):
        e = locs.get(loc_id, "")
        return (f"{Path(files.get(_field(e, 'file_name_id'), '?')).name}:"
                f"{funcs.get(_field(e, 'function_name_id'), '?').split('.')[-1]}:"
                f"{_field(e, 'line')}")

    def stack(frame_id):
        out, seen = [], set()
        while frame_id in frames and frame_id not in seen and len(out) < depth:
            seen.add(frame_id)
            e = frames[frame_id]
            out.append(loc_name(_field(e, "file_location_id")))
            frame_id = _field(e, "parent_frame_id") - 1
        return " < ".join(out) or "?"

    sources = {}
    pattern = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{([^}]*)\}")
    for line in hlo_text.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        meta = m.group(2)
        op_name = re.search(r'op_name="([^"]*)"', meta)
        op_name = op_name.group(1) if op_name else ""
        order = op_name.count("jvp(") + op_name.count("transpose(")
        kind = op_name.rsplit("/", 1)[-1] if op_name else "?"
        prefix = "fwd" if order <= 1 else ("d1" if order == 2 else "d2")
        frame = re.search(r"stack_frame_id=(\d+)", meta)
        sources[m.group(1)] = (stack(int(frame.group(1))) if frame else "?",
                               f"{prefix} {kind}")
    return sources


def profile_chunk(impl, calls: int = 2, top: int = 12, out=sys.stdout) -> dict[str, Any]:
    """Share of a compiled chunk's time by operation, from a ``jax.profiler`` trace.

    Runs ``calls`` timed calls of ``impl`` (a :class:`JgiVmap`) under
    ``jax.profiler.trace`` (perfetto JSON), sums the duration of every event named
    after an instruction of the compiled module (XLA:CPU records one per executed
    thunk: a fusion, a dot, a copy), and groups the instructions by the Python source
    that emitted them (:func:`hlo_sources`) and by operation kind. Prints the ``top``
    groups of each and returns them as fractions of the summed op time.
    """
    import collections  # pylint: disable=g-import-not-at-top
    import gzip  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top

    sources = hlo_sources(impl.compiled.as_text())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                impl()
        trace = sorted(Path(tmp).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace[-1]))["traceEvents"] if trace else []
    by_source, by_op = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name not in sources:
            continue
        source, op = sources[name]
        by_source[source] += e.get("dur", 0)
        by_op[op] += e.get("dur", 0)
    total = sum(by_source.values())
    result = {"op_seconds": total / 1e6 / calls,
              "by_source": {k: v / total for k, v in by_source.most_common(top)} if total
              else {},
              "by_op": {k: v / total for k, v in by_op.most_common(top)} if total else {}}
    print(f"profile: {total / 1e3 / calls:.1f} ms of XLA ops per call "
          f"({impl.victims_timed} victims); share by source (innermost frames):", file=out)
    for k, v in result["by_source"].items():
        print(f"  {100 * v:5.1f}%  {k}", file=out)
    print("share by operation (fwd / d1 derivative / d2 double backward):", file=out)
    for k, v in result["by_op"].items():
        print(f"  {100 * v:5.1f}%  {k}", file=out)
    return result


# ---------------------------------------------------------------------------- main


def counted_clients(n_clients: int, client_batch: int | None) -> int:
    """Clients whose local step XLA's cost analysis of a FedAvg round counts.

    All clients in one vmap: all of them. ``lax.map(..., batch_size=client_batch)``: a
    scan over groups of ``client_batch`` (its body counted once) plus one vmapped group
    of the ``n_clients % client_batch`` left over.
    """
    if client_batch is None or client_batch >= n_clients:
        return n_clients
    return client_batch + n_clients % client_batch


def run_fedavg(model_name, shape_name, stack_name, args, peak):
    """Samples per second of one FedAvg round (clients vmapped, ``--fl-client-batch`` at a
    time when set), median of repeats."""
    shape = SHAPES[shape_name]
    stack = defenses.from_names(stack_name)
    model = models.get(model_name, **stack.model_options())
    config = fedavg.FedAvgConfig(client_batch=args.fl_client_batch)
    n_clients, n_train = args.fl_clients, args.fl_batches * config.batch_size
    params = model.init(jax.random.key(0), shape)
    opt_state = fedavg.client_opt_states(config, params, n_clients)
    x = jax.random.normal(jax.random.key(1), (n_clients, n_train, *shape))
    y = jax.random.randint(jax.random.key(2), (n_clients, n_train), 0, 10)
    round_fn = jax.jit(fedavg.make_round(model, stack, config, shape, n_train, n_clients))
    key = jax.random.key(3)
    t = time.perf_counter()
    compiled = round_fn.lower(params, opt_state, x, y, key).compile()
    compile_s = time.perf_counter() - t
    samples = n_clients * args.fl_batches * config.batch_size
    # XLA's cost analysis counts a scan body once: the round's count is one local step
    # of the clients in one vmapped group, i.e. that many x batch_size training examples.
    flops = _xla_flops(compiled) / (counted_clients(n_clients, config.client_batch)
                                    * config.batch_size)
    jax.block_until_ready(compiled(params, opt_state, x, y, key))  # warm-up
    times = []
    for _ in range(args.repeats):
        time.sleep(args.pause)
        t = time.perf_counter()
        jax.block_until_ready(compiled(params, opt_state, x, y, key))
        times.append(time.perf_counter() - t)
    sps = samples / statistics.median(times)
    device = jax.devices()[0]
    return {
        "impl": "jgi-fedavg", "model": model_name, "input_shape": shape_name,
        "defenses": list(stack.names), "victims": None, "victim_iters_per_s": None,
        "clients": n_clients, "client_batch": args.fl_client_batch,
        "samples_per_round": samples, "samples_per_s": round(sps, 1),
        "compile_s": round(compile_s, 2), "peak_memory_mb": _round(_xla_memory_mb(compiled), 1),
        "memory_source": "xla", "flops_per_sample": flops, "peak_flops": round(peak),
        "peak_fraction": round(flops * sps / peak, 4) if flops == flops else None,
        "repeats": args.repeats,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "num_devices": len(jax.devices()), "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _round(x, digits):
    return None if x is None else round(x, digits)


def print_fedavg_table(records, out=sys.stdout):
    header = (f"{'model':8} {'shape':8} {'defenses':12} {'clients':>7} {'samples/s':>10} "
              f"{'compile s':>9} {'mem MB':>7} {'MFLOP/sample':>12} {'peak %':>6}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in records:
        mem = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        pf = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}"
        print(f"{r['model']:8} {r['input_shape']:8} {','.join(r['defenses']) or 'none':12} "
              f"{r['clients']:>7} {r['samples_per_s']:>10.1f} {r['compile_s']:>9.1f} "
              f"{mem:>7} {r['flops_per_sample'] / 1e6:>12.2f} {pf:>6}", file=out)


def run_config(model_name, shape_name, attack, num_victims, impls, args, peak, note):
    """Builds every implementation of one configuration, then times them interleaved."""
    shape = SHAPES[shape_name]
    setups: dict[str | None, Setup] = {}

    def setup_for(conv_impl):
        if conv_impl not in setups:
            setups[conv_impl] = build_setup(model_name, shape, attack, num_victims, conv_impl)
        return setups[conv_impl]

    built = {}
    for impl in impls:
        reason = skip_reason(impl, model_name, attack)
        if reason:
            note(f"skip {impl} for {model_name}/{attack}: {reason}")
            continue
        try:
            if not impl.startswith("torch-"):
                built[(impl, None)] = make_impl(impl, setup_for, args.iters,
                                                args.loop_victims)
                continue
            # PyTorch: built once, then the fastest of the thread counts (one
            # calibration step each) is kept.
            torch_impl = make_impl(impl, setup_for, args.iters, args.loop_victims,
                                   args.torch_threads[0], args.torch_backend)
            best = None
            for threads in args.torch_threads:
                torch_impl.set_threads(threads)
                torch_reference.torch.set_num_threads(threads)
                t = time.perf_counter()
                torch_impl.attack.step(1)
                seconds = time.perf_counter() - t
                if best is None or seconds < best[0]:
                    best = (seconds, threads)
            torch_impl.set_threads(best[1])
            built[(impl, best[1])] = torch_impl
            if torch_impl.compiled_error is not None:
                note(f"{impl} {model_name}/{shape_name}/{num_victims} victims: compiled in "
                     f"{torch_impl.compile_s:.0f} s; max |compiled - eager torch.func| loss "
                     f"{torch_impl.compiled_error[0]:.2g}, image gradient "
                     f"{torch_impl.compiled_error[1]:.2g}")
            if len(args.torch_threads) > 1:
                note(f"{impl} {model_name}/{shape_name}/{num_victims} victims: fastest with "
                     f"{best[1]} thread(s) of {args.torch_threads}")
        except (ValueError, TypeError, NotImplementedError) as e:
            note(f"skip {impl} for {model_name}/{shape_name}/{attack}: {e}")
    if not built:
        return []
    if any(i.startswith("torch-") for i, _ in built):
        errors = torch_check(setup_for(None), built)
        note(f"{shape_name}: PyTorch vs jgi first image gradient, max abs difference: "
             + ", ".join(f"{k} {v:.2g}" for k, v in errors.items()))
    flops = next((b.flops_per_victim_iter for b in built.values()
                  if b.flops_per_victim_iter == b.flops_per_victim_iter), float("nan"))
    for b in built.values():
        b()  # warm-up (and the first donated call)
    times = {impl: [] for impl in built}
    order = list(built.items())
    for r in range(args.repeats):
        # Interleaved, and rotated so that no implementation always follows the same one.
        for impl, b in order[r % len(order):] + order[:r % len(order)]:
            # Let the previous implementation's worker threads (OpenMP spins after each
            # parallel region) go idle, so they do not steal the cores from this one.
            time.sleep(args.pause)
            t = time.perf_counter()
            b()
            times[impl].append(time.perf_counter() - t)
    profiles = {}
    if getattr(args, "profile", False):
        out = sys.stderr if args.json else sys.stdout
        for (impl, _), b in built.items():
            if impl.startswith("jgi-vmap"):
                print(f"\n{model_name} {shape_name} {attack} {num_victims} victims {impl}:",
                      file=out)
                profiles[impl] = profile_chunk(b, out=out)
    device = jax.devices()[0]
    records = []
    for (impl, threads), b in built.items():
        vips = b.victims_timed * args.iters / statistics.median(times[(impl, threads)])
        f = b.flops_per_victim_iter if b.flops_per_victim_iter == b.flops_per_victim_iter \
            else flops
        records.append({
            "impl": impl, "model": model_name, "input_shape": shape_name, "attack": attack,
            "victims": num_victims, "victims_timed": b.victims_timed,
            "victim_iters_per_s": round(vips, 1),
            "compile_s": None if b.compile_s is None else round(b.compile_s, 2),
            "peak_memory_mb": None if b.peak_memory_mb is None else round(b.peak_memory_mb, 1),
            "memory_source": b.memory_source,
            "flops_per_victim_iter": f, "peak_flops": round(peak),
            "peak_fraction": round(f * vips / peak, 4) if f == f else None,
            "iters": args.iters, "repeats": args.repeats, "torch_threads": threads,
            "compiled_vs_eager_max_abs": getattr(b, "compiled_error", None),
            "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
            "num_devices": len(jax.devices()), "load_avg_1m": round(os.getloadavg()[0], 2),
        })
        if impl in profiles:
            records[-1]["profile"] = profiles[impl]
    return records


def print_table(records, peak, out=sys.stdout):
    print(f"device {records[0]['device']} x{records[0]['num_devices']}, float32 matmul "
          f"peak {peak / 1e9:.1f} GFLOP/s (measured in this run)", file=out)
    header = (f"{'model':8} {'shape':8} {'attack':6} {'vict':>4} {'impl':26} {'vict-it/s':>9} "
              f"{'/torch-comp':>11} {'/torch-vmap':>11} {'/torch-seq':>10} {'/jgi-loop':>9} "
              f"{'compile s':>9} {'mem MB':>7} {'MFLOP/v-it':>10} {'peak %':>6}")
    print(header, file=out)
    print("-" * len(header), file=out)

    def ref(r, impl):
        return next((q for q in records if q["impl"] == impl and all(
            q[k] == r[k] for k in ("model", "input_shape", "attack", "victims"))), None)

    for r in records:
        cols = []
        for impl in ("torch-func-vmap-compile", "torch-func-vmap", "torch-sequential",
                     "jgi-loop"):
            q = ref(r, impl)
            cols.append(f"{r['victim_iters_per_s'] / q['victim_iters_per_s']:.2f}x" if q else "-")
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        mem = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        pf = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}"
        name = r["impl"] + (f"/{r['torch_threads']}t" if r["torch_threads"] else "")
        print(f"{r['model']:8} {r['input_shape']:8} {r['attack']:6} {r['victims']:>4} "
              f"{name:26} {r['victim_iters_per_s']:>9.1f} {cols[0]:>11} {cols[1]:>11} "
              f"{cols[2]:>10} {cols[3]:>9} {comp:>9} {mem:>7} "
              f"{r['flops_per_victim_iter'] / 1e6:>10.2f} {pf:>6}", file=out)


def _csv(parser, value, valid, what):
    items = [v.strip() for v in value.split(",") if v.strip()]
    for v in items:
        if valid is not None and v not in valid:
            parser.error(f"unknown {what} {v!r}; valid: {', '.join(valid)}")
    return items


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="auto",
                        help="comma-separated, or 'auto': each of cnn,resnet18,vit registered")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=",".join(SHAPES))
    parser.add_argument("--attacks", default="ig", help=",".join(ATTACK_STACKS))
    parser.add_argument("--victims", default=None,
                        help="comma-separated victim counts (default 1,8,32,128 for the CNN, "
                             "1,8 for heavier models)")
    parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help=",".join(IMPLS))
    parser.add_argument("--iters", type=int, default=10, help="attack steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-victims", type=int, default=8,
                        help="victims timed by the one-at-a-time implementations")
    parser.add_argument("--torch-threads", default=f"1,{os.cpu_count() or 1}",
                        help="PyTorch intra-op thread counts to try; the fastest is timed")
    parser.add_argument("--torch-backend", default=None,
                        help="torch.compile backend of torch-func-vmap-compile (default "
                             "inductor; 'eager' only checks the capture, for tests)")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds of idle before each timed call")
    parser.add_argument("--fl-stacks", default="none;dp",
                        help="';'-separated defense stacks for the FedAvg round benchmark "
                             "(e.g. 'none;dp;dropout,prune,cvb'); empty skips it")
    parser.add_argument("--fl-clients", type=int, default=10)
    parser.add_argument("--fl-client-batch", type=int, default=None,
                        help="clients trained at once (FedAvgConfig.client_batch; default all)")
    parser.add_argument("--fl-batches", type=int, default=8,
                        help="local batches of 64 per client in the timed round")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, trace every jgi-vmap chunk with jax.profiler and "
                             "print its time by source line and operation (profile_chunk)")
    parser.add_argument("--json", action="store_true", help="print only JSON lines")
    args = parser.parse_args(argv)
    args.torch_threads = sorted({int(t) for t in _csv(parser, args.torch_threads, None,
                                                       "thread count")})

    shapes = _csv(parser, args.shapes, SHAPES, "shape")
    attacks = _csv(parser, args.attacks, ATTACK_STACKS, "attack")
    impls = _csv(parser, args.impls, IMPLS, "impl")
    notes: list[str] = []
    fl_stacks = [t.strip() for t in args.fl_stacks.split(";") if t.strip()]
    for t in fl_stacks:
        try:
            defenses.from_names(t)
        except ValueError as e:
            parser.error(f"--fl-stacks: {e}")

    def note(msg):
        notes.append(msg)
        print(f"note: {msg}", file=sys.stderr if args.json else sys.stdout, flush=True)

    if args.models == "auto":
        model_names = [m for m in BENCH_MODELS if m in models.MODELS]
        for m in BENCH_MODELS:
            if m not in models.MODELS:
                note(f"model {m!r} is not in jgi.models.MODELS on this branch: skipped")
    else:
        model_names = _csv(parser, args.models, models.MODELS, "model")
    explicit_victims = None if args.victims is None else [
        int(v) for v in _csv(parser, args.victims, None, "victims")]

    peak = measure_matmul_peak()
    records = []
    for model_name in model_names:
        victim_counts = explicit_victims or ([1, 8, 32, 128] if model_name == "cnn"
                                             else list(HEAVY_DEFAULT_VICTIMS))
        for shape_name in shapes:
            for attack in attacks:
                for v in victim_counts:
                    try:
                        config_records = run_config(model_name, shape_name, attack, v,
                                                    impls, args, peak, note)
                    except (jax.errors.JaxRuntimeError, MemoryError) as e:
                        note(f"skip {model_name}/{shape_name}/{attack}/{v} victims: "
                             f"{str(e).splitlines()[0][:200]}")
                        continue
                    for rec in config_records:
                        records.append(rec)
                        if args.json:
                            print(json.dumps(rec), flush=True)
    fl_records = []
    for model_name in model_names:
        for shape_name in shapes:
            for stack_name in fl_stacks:
                try:
                    rec = run_fedavg(model_name, shape_name, stack_name, args, peak)
                except (jax.errors.JaxRuntimeError, MemoryError) as e:
                    # e.g. DP's per-example gradients of ResNet-18 for every client at
                    # once: 10 x 64 x 11M floats, more than a small machine's memory.
                    note(f"skip FedAvg {model_name}/{shape_name}/{stack_name}: "
                         f"{str(e).splitlines()[0][:200]} (try --fl-client-batch=1)")
                    continue
                fl_records.append(rec)
                if args.json:
                    print(json.dumps(rec), flush=True)
    if args.json:
        return
    if records:
        print()
        print_table(records, peak)
    if fl_records:
        print("\nFedAvg: one round, all clients vmapped (training examples per second)")
        print_fedavg_table(fl_records)
    print()
    for r in records + fl_records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
