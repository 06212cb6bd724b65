"""The one runner every optimisation-based attack shares.

An attack is data plus pure functions (:class:`Problem`): how to initialise a candidate
for one victim, the objective to minimise, an optax optimiser, and a projection applied
after every step. The runner inverts all victims in parallel:

- ``jax.vmap`` over victims *inside* each step, ``lax.scan`` over steps in chunks, the
  whole chunk jit-compiled once (same shapes every chunk, so no recompiles) with the
  state buffers donated;
- per-victim best-so-far tracking and stopping in the carry: a victim that has stopped
  is frozen (its state no longer changes) while the others go on;
- host work only between chunks: the progress bar, optional checkpoints, and the early
  exit once every victim has stopped;
- on CPU, each step's gradient is materialised once before the optimiser consumes it
  (XLA would otherwise recompute the convolutions' input-gradient in every consumer);
- compaction: once at most half of the batch is still running, the running victims are
  gathered into a smaller batch (a power of two, one compilation per size), so that the
  last slow victims do not pay for all the finished ones;
- several devices: the victim axis is sharded over every device ``jax.devices()``
  returns (all local accelerators, or all hosts' after ``jax.distributed.initialize``)
  through a one-axis :class:`jax.sharding.Mesh` named ``"victims"``. Victims are
  independent, so each device runs its own share of the vmapped step and nothing is
  communicated inside a chunk; the victim count is padded to a multiple of the device
  count with frozen copies of victim 0, which are dropped from the result. The same key
  gives the same reconstructions on one device or many.

Stopping rule (core paper, section 5.2, after the authors' code): stop a victim when its
best loss is below ``loss_below``, or when ``patience`` iterations passed without a new
best loss, or after ``max_iters`` iterations. The returned candidate is the best iterate
(the one whose own loss was lowest), not the last.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

Candidate = Any  # pytree, e.g. {"x": image}
Victim = Any  # pytree of per-victim data, e.g. {"target": update, "label": y}
Context = Any  # pytree shared by all victims, e.g. {"params": ...}

STOP_REASONS = ("running", "loss_below", "no_improvement", "max_iters")
_PADDING = -1  # stop reason of the frozen victims that pad the batch to the device count
VICTIM_AXIS = "victims"


@dataclasses.dataclass(frozen=True)
class StoppingRule:
    """When one victim's optimisation stops.

    Attributes:
      max_iters: hard limit on iterations (paper: 20,000).
      loss_below: stop once the best loss is below this (paper: 1e-5).
      patience: stop after this many iterations without a new best loss (paper: 4,000).
    """

    max_iters: int = 20_000
    loss_below: float = 1e-5
    patience: int = 4_000

    def __post_init__(self):
        if self.max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {self.max_iters}.")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}.")


class Problem(NamedTuple):
    """An attack as data plus pure functions, for one victim (the runner vmaps them).

    Attributes:
      init: ``(key, victim, context) -> candidate``.
      objective: ``(candidate, victim, context, key) -> (loss, aux)``; ``key`` is fresh
        every step (for attacks that sample randomness they do not know).
      optimizer: an optax transformation; ``update`` is called with ``value=loss`` so
        that ``optax.contrib.reduce_on_plateau`` works in the chain.
      project: ``(candidate, victim, context) -> candidate`` after each step (box
        constraints, mask clamping).
      needs_value_fn: also call ``update`` with ``grad=`` (the gradient at the candidate)
        and ``value_fn=`` (``candidate -> loss``: the objective at this step's victim,
        context and key), as optimisers with a line search or inner iterations need
        (``optax.lbfgs``, :mod:`jgi.attacks.lbfgs`).
      restart_on_nan: when the loss or its gradient at the candidate is not finite, the
        next candidate is the best one so far and the optimiser's state starts afresh
        (``optimizer.init(best)``) instead of the optimiser's step from the NaN point.
        The step counts as an iteration without improvement, so a victim that keeps
        failing is stopped by ``patience`` or ``max_iters``.
    """

    init: Callable[[jax.Array, Victim, Context], Candidate]
    objective: Callable[[Candidate, Victim, Context, jax.Array], tuple[jax.Array, Any]]
    optimizer: optax.GradientTransformationExtraArgs
    project: Callable[[Candidate, Victim, Context], Candidate]
    needs_value_fn: bool = False
    restart_on_nan: bool = False


class RunnerState(NamedTuple):
    """The scan carry, one entry per victim (leading axis)."""

    candidate: Candidate
    opt_state: Any
    best: Candidate
    best_loss: jax.Array
    last_loss: jax.Array
    since_best: jax.Array
    iteration: jax.Array
    stop_reason: jax.Array
    key_data: jax.Array


class AttackResult(NamedTuple):
    """What an attack returns, per victim (leading axis).

    Attributes:
      best: the best candidate found (for example ``best["x"]`` the reconstructions).
      best_loss: the objective at ``best``.
      iterations: iterations run before the victim stopped.
      stop_reason: index into :data:`STOP_REASONS`.
      wall_seconds: wall-clock time of the whole run, compile included.
      compile_seconds: time spent compiling chunks (one compilation per batch size).
      num_devices: how many devices the victim axis was sharded over.
    """

    best: Candidate
    best_loss: np.ndarray
    iterations: np.ndarray
    stop_reason: np.ndarray
    wall_seconds: float
    compile_seconds: float
    num_devices: int = 1


def _tree_where(cond: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def init_state(problem: Problem, victims: Victim, context: Context,
               key: jax.Array) -> RunnerState:
    """Initial runner state for every victim (vmapped ``problem.init``)."""
    num_victims = _num_victims(victims)
    keys = jax.random.split(key, num_victims)

    def one(k, victim):
        k_init, k_run = jax.random.split(k)
        candidate = problem.init(k_init, victim, context)
        inf = jnp.asarray(jnp.inf, jnp.float32)
        return RunnerState(
            candidate=candidate,
            opt_state=problem.optimizer.init(candidate),
            best=candidate,
            best_loss=inf,
            last_loss=inf,
            since_best=jnp.asarray(0, jnp.int32),
            iteration=jnp.asarray(0, jnp.int32),
            stop_reason=jnp.asarray(0, jnp.int32),
            key_data=jax.random.key_data(k_run),
        )

    return jax.jit(jax.vmap(one, in_axes=(0, 0)))(keys, victims)


def _step_parts(problem: Problem, stopping: StoppingRule):
    """A step's two halves for one victim: the objective's gradient, then the update."""
    grad_fn = jax.value_and_grad(problem.objective, has_aux=True)

    def gradient(state: RunnerState, victim: Victim, context: Context):
        key, sub = jax.random.split(jax.random.wrap_key_data(state.key_data))
        (loss, _), grad = grad_fn(state.candidate, victim, context, sub)
        return loss, grad, jax.random.key_data(key)

    def update(state: RunnerState, loss, grad, key_data, victim: Victim,
               context: Context) -> RunnerState:
        improved = loss < state.best_loss
        best = _tree_where(improved, state.candidate, state.best)
        best_loss = jnp.where(improved, loss, state.best_loss)
        since_best = jnp.where(improved, 0, state.since_best + 1)
        extra = {}
        if problem.needs_value_fn:
            # The key the gradient half used: the objective is the same function there.
            _, sub = jax.random.split(jax.random.wrap_key_data(state.key_data))
            extra = {"grad": grad,
                     "value_fn": lambda c: problem.objective(c, victim, context, sub)[0]}
        updates, opt_state = problem.optimizer.update(
            grad, state.opt_state, state.candidate, value=loss, **extra)
        candidate = problem.project(optax.apply_updates(state.candidate, updates), victim,
                                    context)
        if problem.restart_on_nan:
            finite = jnp.isfinite(loss)
            for leaf in jax.tree.leaves(grad):
                finite = finite & jnp.all(jnp.isfinite(leaf))
            candidate = _tree_where(finite, candidate, best)
            opt_state = _tree_where(finite, opt_state, problem.optimizer.init(best))
        iteration = state.iteration + 1
        reason = jnp.where(
            best_loss < stopping.loss_below, 1,
            jnp.where(since_best >= stopping.patience, 2,
                      jnp.where(iteration >= stopping.max_iters, 3, 0)))
        new = RunnerState(candidate, opt_state, best, best_loss, loss, since_best, iteration,
                          reason.astype(jnp.int32), key_data)
        return _tree_where(state.stop_reason == 0, new, state)

    return gradient, update


def make_step(problem: Problem, stopping: StoppingRule):
    """One optimisation step for one victim; frozen once the victim has stopped."""
    gradient, update = _step_parts(problem, stopping)

    def step(state: RunnerState, victim: Victim, context: Context) -> RunnerState:
        loss, grad, key_data = gradient(state, victim, context)
        return update(state, loss, grad, key_data, victim, context)

    return step


def _materialized_on_cpu(tree: Any, index: jax.Array) -> Any:
    """``tree`` unchanged, but computed once into memory before its consumers run (CPU).

    XLA's CPU fusion duplicates a cheap-looking producer into every consumer fusion. The
    image gradient's last producer is the transpose of the convolutions' patch
    extraction (a sum of padded slices, one per kernel tap), and the optimiser has
    several elementwise consumers of it (Adam's two moments, the new candidate), so on
    CPU that sum was computed three times per step. A ``lax.cond`` is a fusion
    boundary: its result is materialised once. The predicate (the scan index is >= 0)
    is always true but not a compile-time constant, so XLA keeps the conditional; the
    never-taken branch returns zeros only because a branch identical to the other is
    simplified away. Other platforms get ``tree`` as is.
    """
    def cpu(t):
        return lax.cond(index >= 0, lambda u: u, lambda u: jax.tree.map(jnp.zeros_like, u), t)

    return lax.platform_dependent(tree, cpu=cpu, default=lambda t: t)


CPU_VICTIM_TILE = 32
MAX_TILES = 4


def default_victim_tile() -> int | None:
    """Victims per tile on the default backend: 32 on CPU, no tiling elsewhere.

    Measured on 2 CPU cores (CNN, 128 victims, ``benchmarks/attack_throughput.py
    --impls=jgi-vmap,jgi-vmap-untiled``): 4 tiles of 32 ran IG at 2,360
    victim-iterations/s at 32x32x3 against 1,993 untiled (whose per-step working set,
    ~150 MB, no longer fits the caches), 3,107 against 2,713 at 28x28x1, and DIA/CDIA
    5-16% faster. On a GPU the whole batch is one kernel launch per op, and tiling
    would only serialise it.
    """
    return CPU_VICTIM_TILE if jax.default_backend() == "cpu" else None


def make_chunk(problem: Problem, stopping: StoppingRule, chunk_size: int, *,
               materialize_gradient: bool = True, victim_tile: int | None = None):
    """``chunk(state, victims, context) -> state`` running ``chunk_size`` vmapped steps.

    Each step is :func:`make_step` vmapped over the victims. With
    ``materialize_gradient`` (the default), the victims' gradients are computed into
    memory once per step on CPU before the update consumes them (see
    :func:`_materialized_on_cpu`). Measured on 2 CPU cores (CNN, 128 victims,
    ``--impls=jgi-vmap,jgi-vmap-plain``): IG 13% faster at 28x28x1 and 2% at 32x32x3,
    DIA 15% and 13%, CDIA 15% and 10%; IG's steps are
    bitwise identical, and where an unsigned gradient drives the update (DIA's masks)
    the two differ only in the last bits, because XLA compiles the recomputed copies
    of the plain version in different fusions (tests/attacks/test_runner.py).

    With ``victim_tile`` (see :func:`default_victim_tile`) and a batch of more than
    ``victim_tile`` victims, the batch is split into ceil(n / victim_tile) tiles (at most
    :data:`MAX_TILES`, larger tiles beyond) that run the whole chunk one after the other,
    each its own ``lax.scan`` over steps with ``vmap`` over the tile's victims, so a
    tile's state stays in the caches for all ``chunk_size`` steps. Each tile is compiled
    separately (compile time grows with the number of tiles; a ``lax.map`` over tiles
    compiles once but measured no faster than the untiled chunk). Victims are
    independent: the results are those of the untiled chunk.
    """
    gradient, update = _step_parts(problem, stopping)
    gradient = jax.vmap(gradient, in_axes=(0, 0, None))
    update = jax.vmap(update, in_axes=(0, 0, 0, 0, 0, None))

    def untiled(state, victims, context):
        def body(s, index):
            loss, grad, key_data = gradient(s, victims, context)
            if materialize_gradient:
                loss, grad = _materialized_on_cpu((loss, grad), index)
            return update(s, loss, grad, key_data, victims, context), None
        state, _ = lax.scan(body, state, jnp.arange(chunk_size))
        return state

    def chunk(state, victims, context):
        n = _num_victims(victims)
        if victim_tile is None or n <= victim_tile:
            return untiled(state, victims, context)
        bounds = np.linspace(0, n, min(MAX_TILES, -(-n // victim_tile)) + 1).astype(int)
        outs = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            def part(a, lo=lo, hi=hi):
                return a[lo:hi]
            outs.append(untiled(jax.tree.map(part, state), jax.tree.map(part, victims),
                                context))
        return jax.tree.map(lambda *a: jnp.concatenate(a), *outs)

    return chunk


def _num_victims(victims: Victim) -> int:
    leaves = jax.tree.leaves(victims)
    if not leaves:
        raise ValueError("victims is empty: it needs arrays with a leading victim axis.")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"Every victim array needs the same leading victim axis; found sizes {sizes}.")
    return sizes.pop()


def _gather(tree: Any, idx: np.ndarray) -> Any:
    return jax.tree.map(lambda a: a[idx], tree)


def _scatter(full: Any, idx: np.ndarray, part: Any) -> Any:
    return jax.tree.map(lambda f, p: f.at[idx].set(p), full, part)


def _bucket(n: int) -> int:
    """Smallest power of two >= n."""
    return 1 << max(n - 1, 0).bit_length()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def victim_mesh(devices=None) -> Mesh:
    """A one-axis mesh named ``"victims"`` over ``devices`` (default: ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("victim_mesh needs at least one device.")
    return Mesh(np.asarray(devices), (VICTIM_AXIS,))


def _to_host(tree: Any) -> Any:
    """NumPy copies of (possibly sharded, possibly multi-host) arrays."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return multihost_utils.process_allgather(a, tiled=True)
        return np.asarray(a)
    return jax.tree.map(one, tree)


def _pad_victims(tree: Any, size: int) -> Any:
    """Pads the leading victim axis to ``size`` with copies of victim 0."""
    def one(a):
        n = a.shape[0]
        if n == size:
            return a
        return jnp.concatenate([a, jnp.broadcast_to(a[:1], (size - n, *a.shape[1:]))])
    return jax.tree.map(one, tree)


def with_victim_axis(updates: Any, params: Any) -> Any:
    """Adds a victim axis of 1 to an update that has the parameters' own shapes (an update
    that already has one is returned as it is)."""
    u, p = jax.tree.leaves(updates), jax.tree.leaves(params)
    if len(u) != len(p):
        raise ValueError(f"The update has {len(u)} arrays, the model's params {len(p)}: "
                         "pass the update of this model.")
    if all(np.ndim(a) == np.ndim(b) for a, b in zip(u, p, strict=True)):
        return jax.tree.map(lambda a: jnp.asarray(a)[None], updates)
    if all(np.ndim(a) == np.ndim(b) + 1 for a, b in zip(u, p, strict=True)):
        return updates
    raise ValueError("Every update array needs the shape of its parameter, or one leading "
                     "victim axis more.")


def run(problem: Problem, victims: Victim, context: Context, key: jax.Array,
        stopping: StoppingRule = StoppingRule(), *, chunk_size: int = 100,
        progress: bool | str = True, checkpoint=None, compact: bool = True,
        devices=None) -> AttackResult:
    """Runs an attack on all victims in parallel until every victim has stopped.

    Args:
      problem: the attack (:class:`Problem`).
      victims: per-victim data, every leaf with a leading victim axis.
      context: data shared by all victims (model parameters, bounds).
      key: PRNG key; the same key gives the same reconstructions.
      stopping: the :class:`StoppingRule`.
      chunk_size: steps per compiled chunk; host work happens only between chunks.
      progress: show a tqdm bar (a string is used as its description).
      checkpoint: optional :class:`jgi.checkpointing.AttackCheckpoint`; the state
        is restored from it if present and saved to it between chunks.
      compact: once at most half of the victims in the batch are still running, continue
        with only those (padded with stopped, frozen victims to a power of two), so the
        few slow victims do not pay for the finished ones. Victims are independent, so
        this changes no result beyond float reassociation in XLA's batched kernels.
      devices: the devices the victim axis is sharded over; default ``jax.devices()``
        (every local device, and every host's after ``jax.distributed.initialize``).
        The batch is padded to a multiple of their number with frozen victims.

    Returns:
      An :class:`AttackResult`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    start = time.perf_counter()
    num_victims = _num_victims(victims)
    full = init_state(problem, victims, context, key)
    if checkpoint is not None:
        full = checkpoint.restore(full)

    mesh = victim_mesh(devices)
    n_devices = mesh.size
    sharded = NamedSharding(mesh, P(VICTIM_AXIS))
    replicated = NamedSharding(mesh, P())
    padded = _round_up(num_victims, n_devices)
    if padded > num_victims:
        full = _pad_victims(full, padded)
        full = full._replace(stop_reason=full.stop_reason.at[num_victims:].set(_PADDING))
        victims = _pad_victims(victims, padded)
    full = jax.device_put(full, sharded)
    victims = jax.device_put(victims, sharded)
    context = jax.device_put(context, replicated)

    tile = default_victim_tile() if n_devices == 1 else None
    chunk = jax.jit(make_chunk(problem, stopping, chunk_size, victim_tile=tile),
                    donate_argnums=(0,),
                    in_shardings=(sharded, sharded, replicated), out_shardings=sharded)
    compiled: dict[int, Any] = {}
    compile_seconds = 0.0

    bar = None
    if progress:
        from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
        bar = tqdm(total=stopping.max_iters, desc=progress if isinstance(progress, str)
                   else "attack", unit="it", dynamic_ncols=True, leave=True)
        bar.update(int(_to_host(full.iteration).max()))

    active = np.arange(padded)
    state, active_victims = full, victims
    compacted = False  # until then, ``state`` is the full state (its buffers are donated)

    def merged():
        return _scatter(full, active, state) if compacted else state

    def unpadded(tree):
        return jax.tree.map(lambda a: a[:num_victims], _to_host(tree))

    try:
        while True:
            running = _to_host(state.stop_reason) == 0
            n_running = int(running.sum())
            if n_running == 0:
                break
            target = _round_up(_bucket(n_running), n_devices)
            if compact and target <= len(active) // 2:
                full = merged()
                compacted = True
                stopped = active[~running]
                active = np.concatenate([active[running], stopped[: target - n_running]])
                state = jax.device_put(_gather(full, active), sharded)
                active_victims = jax.device_put(_gather(victims, active), sharded)
            size = len(active)
            if size not in compiled:
                t0 = time.perf_counter()
                compiled[size] = chunk.lower(state, active_victims, context).compile()
                compile_seconds += time.perf_counter() - t0
            state = compiled[size](state, active_victims, context)
            if bar is not None:
                reason, best_loss, iteration = _to_host(
                    (state.stop_reason, state.best_loss, state.iteration))
                real = reason != _PADDING
                bar.set_postfix(running=int(np.sum(reason == 0)), batch=size,
                                loss=f"{float(np.mean(best_loss[real])):.4g}", refresh=False)
                bar.update(max(int(iteration.max()) - bar.n, 0))
            if checkpoint is not None and checkpoint.due():
                checkpoint.save(unpadded(merged()))
    finally:
        if bar is not None:
            bar.close()
    full = unpadded(merged())
    return AttackResult(
        best=full.best,
        best_loss=full.best_loss,
        iterations=full.iteration,
        stop_reason=full.stop_reason,
        wall_seconds=time.perf_counter() - start,
        compile_seconds=compile_seconds,
        num_devices=n_devices,
    )


def run_looped(problem: Problem, victims: Any, context: Any, key: jax.Array,
               stopping: StoppingRule, *, chunk_size: int,
               progress: bool | str = False) -> AttackResult:
    """:func:`run`'s result, one victim at a time.

    The initial state is the runner's for all victims at once
    (:func:`init_state`: the same candidates and PRNG keys as the
    vmapped run), then each victim's slice runs the runner's chunk
    (:func:`make_chunk`, compiled once for one victim) until it
    stops. No compaction, checkpointing or sharding: for CPU runs where a vmapped step
    is slower than a loop of single-victim steps (per-victim convolution weights,
    e.g. GIAS's generator-parameter phase).
    """
    start = time.perf_counter()
    full = init_state(problem, victims, context, key)
    n = jax.tree.leaves(victims)[0].shape[0]
    chunk = jax.jit(make_chunk(problem, stopping, chunk_size), donate_argnums=(0,))
    compiled, compile_seconds, finals = None, 0.0, []
    bar = None
    if progress:
        from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
        bar = tqdm(total=n * stopping.max_iters, unit="it", dynamic_ncols=True,
                   desc=progress if isinstance(progress, str) else "attack (loop)")
    try:
        for i in range(n):
            state = jax.tree.map(lambda a, i=i: a[i:i + 1], full)
            victim = jax.tree.map(lambda a, i=i: a[i:i + 1], victims)
            if compiled is None:
                t0 = time.perf_counter()
                compiled = chunk.lower(state, victim, context).compile()
                compile_seconds = time.perf_counter() - t0
            done = 0
            while int(np.asarray(state.stop_reason)[0]) == 0:
                state = compiled(state, victim, context)
                if bar is not None:
                    it = int(np.asarray(state.iteration)[0])
                    bar.update(it - done)
                    done = it
            finals.append(jax.device_get(state))
    finally:
        if bar is not None:
            bar.close()
    merged = jax.tree.map(lambda *a: np.concatenate(a), *finals)
    return AttackResult(best=merged.best, best_loss=merged.best_loss,
                               iterations=merged.iteration, stop_reason=merged.stop_reason,
                               wall_seconds=time.perf_counter() - start,
                               compile_seconds=compile_seconds, num_devices=1)
