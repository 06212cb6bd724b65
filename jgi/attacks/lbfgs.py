"""L-BFGS for the attack runner, in two named semantics.

DLG (Zhu et al. 2019) and the attacks built on it optimise with L-BFGS, and "L-BFGS"
means two different algorithms in practice, which give different reconstructions:

- ``"pytorch"``: one call of PyTorch's ``torch.optim.LBFGS.step(closure)``, the optimiser
  DLG's published results used (mit-han-lab/dlg: ``LBFGS([dummy_data, dummy_label])``,
  all defaults: lr 1, up to ``max_iter`` = 20 inner iterations per step, at most
  ``max_eval`` = 25 function evaluations, history 100, ``tolerance_grad`` 1e-7,
  ``tolerance_change`` 1e-9, and **no line search**: every inner iteration moves by
  ``lr`` times the quasi-Newton direction, except the very first of the run, whose step
  is ``min(1, 1 / |g|_1) * lr``). :func:`pytorch_lbfgs` is a JAX version of the
  algorithm PyTorch documents and implements (minFunc's, without line search), written
  for ``jit`` and ``vmap``: the history is a fixed-size ring buffer of the last
  ``history_size`` curvature pairs, the inner loop a ``lax.while_loop``. One runner
  iteration = one ``step()``, so DLG's "300 iterations" are 300 runner iterations of up
  to 20 L-BFGS iterations each.
- ``"optax"``: ``optax.lbfgs`` with its zoom line search (strong Wolfe conditions), one
  runner iteration = one L-BFGS iteration, the line search's function evaluations
  included. The history size is set to PyTorch's 100 (optax's default is 10), so that
  the two semantics differ in the step rule only.

Both are optax ``GradientTransformationExtraArgs`` whose ``update(grad, state, params,
*, value, grad, value_fn)`` needs the objective as a function of the parameters
(``value_fn``): the runner passes it when the problem says ``needs_value_fn=True``
(:func:`make`'s second return value). ``value`` and the gradient at ``params`` are the
runner's own evaluation, so the first evaluation of a PyTorch step is not repeated.

Sharp edge, measured (``benchmarks/dlg_throughput.py``, docs/results/dlg.md): vmapped
over 8 victims, the PyTorch-style step ran DLG slower than the same compiled step called
once per victim (a third of the speed on a loaded machine, 0.84x on a lighter one).
Under ``vmap`` a ``while_loop`` whose predicate differs per victim runs until every
victim is done and then selects its whole carry after every iteration. The inner loop
is therefore a fixed ``fori_loop`` of ``max_iter`` iterations gated by "this victim's
step has not ended": a stored curvature pair writes one row of the ring buffers, and the
direction and the evaluation sit in a ``lax.cond`` whose outputs are vectors (a lone
victim whose step has ended skips them). With history 100 the gated loop was 1.9-2.1x
faster than the while loop at 65k-197k variables (Rosenbrock, 1-4 victims, 4 steps,
iterates bitwise equal; tests/attacks/test_lbfgs.py checks the equality). What remains
is the two-loop recursion, four passes over the 2 x history x n buffers per iteration.

Deviations from PyTorch, both without effect on results that are finite:
- the inner loop also stops at the first non-finite loss: PyTorch would go on moving
  with NaN directions, which only spreads the NaN. The runner then restarts from the
  best point (``Problem.restart_on_nan``), with a fresh L-BFGS state.
- the flat parameter vector is ``jax.flatten_util.ravel_pytree``'s order, not PyTorch's
  parameter order; dot products are sums over the same entries in another order (float
  rounding only).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

SEMANTICS = ("pytorch", "optax")
CURVATURE_EPS = 1e-10  # PyTorch stores a pair only when y.s > 1e-10


class PytorchLBFGSState(NamedTuple):
    """What ``torch.optim.LBFGS`` keeps between steps, with fixed shapes.

    Attributes:
      n_iter: L-BFGS iterations so far over all steps (PyTorch's ``state["n_iter"]``).
      func_evals: objective evaluations so far (``state["func_evals"]``).
      d: the last search direction (flat).
      t: the last step length.
      prev_grad: the gradient at the last point a direction was computed from.
      prev_loss: the loss there.
      dirs: ring buffer of the gradient differences y (history_size, n).
      stps: ring buffer of the steps s = t * d (history_size, n).
      rho: 1 / (y . s) per stored pair.
      head: the slot the next pair is written to.
      count: how many pairs are stored (<= history_size).
      h_diag: the scale y.s / y.y of the initial inverse Hessian.
    """

    n_iter: jax.Array
    func_evals: jax.Array
    d: jax.Array
    t: jax.Array
    prev_grad: jax.Array
    prev_loss: jax.Array
    dirs: jax.Array
    stps: jax.Array
    rho: jax.Array
    head: jax.Array
    count: jax.Array
    h_diag: jax.Array


def _two_loop(g, dirs, stps, rho, head, count, h_diag):
    """L-BFGS two-loop recursion: the direction -H g from the stored pairs.

    Newest to oldest, then oldest to newest, as PyTorch's ``step`` orders them (pair ``j``
    back from the newest sits in slot ``(head - 1 - j) mod history_size``).
    """
    m = dirs.shape[0]

    def slot(j):
        return (head - 1 - j) % m

    def first(j, carry):
        q, al = carry
        i = slot(j)
        a = jnp.dot(stps[i], q) * rho[i]
        return q - a * dirs[i], al.at[i].set(a)

    q, al = lax.fori_loop(0, count, first, (-g, jnp.zeros_like(rho)))
    r = q * h_diag

    def second(k, r):
        i = slot(count - 1 - k)
        be = jnp.dot(dirs[i], r) * rho[i]
        return r + (al[i] - be) * stps[i]

    return lax.fori_loop(0, count, second, r)


def pytorch_lbfgs(learning_rate: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                  tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                  history_size: int = 100) -> optax.GradientTransformationExtraArgs:
    """One ``torch.optim.LBFGS.step()`` (no line search) per ``update``.

    Args:
      learning_rate: the fixed step length (PyTorch's ``lr``; DLG: 1).
      max_iter: L-BFGS iterations per step (20).
      max_eval: objective evaluations per step; default ``max_iter * 5 // 4`` (25).
      tolerance_grad: a step ends (or does nothing) once max |g| <= this (1e-7).
      tolerance_change: a step ends once the directional derivative, the largest step
        entry or the change of the loss falls below this (1e-9).
      history_size: curvature pairs kept (100).

    Returns:
      A transformation whose ``update(grad, state, params, *, value, value_fn)`` runs one
      PyTorch step from ``params``, where ``value`` and ``grad`` are the objective and
      its gradient at ``params`` and ``value_fn(params) -> loss`` evaluates the
      objective; the updates are the step's total move.
    """
    if learning_rate <= 0:
        raise ValueError(f"pytorch_lbfgs: learning_rate must be > 0, got {learning_rate}.")
    if max_iter < 1 or history_size < 1:
        raise ValueError(f"pytorch_lbfgs: max_iter and history_size must be >= 1, got "
                         f"{max_iter} and {history_size}.")
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
    if max_eval < 1:
        raise ValueError(f"pytorch_lbfgs: max_eval must be >= 1, got {max_eval}.")

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        n, dtype = flat.shape[0], flat.dtype
        zeros = jnp.zeros((n,), dtype)
        return PytorchLBFGSState(
            n_iter=jnp.zeros((), jnp.int32), func_evals=jnp.zeros((), jnp.int32), d=zeros,
            t=jnp.zeros((), dtype), prev_grad=zeros, prev_loss=jnp.zeros((), dtype),
            dirs=jnp.zeros((history_size, n), dtype), stps=jnp.zeros((history_size, n), dtype),
            rho=jnp.zeros((history_size,), dtype), head=jnp.zeros((), jnp.int32),
            count=jnp.zeros((), jnp.int32), h_diag=jnp.ones((), dtype))

    def update_fn(updates, state, params=None, *, value, value_fn, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("pytorch_lbfgs needs params (the point the step starts from).")
        x0, unravel = ravel_pytree(params)
        g0, _ = ravel_pytree(updates)
        dtype = x0.dtype
        value_and_grad = jax.value_and_grad(lambda flat: value_fn(unravel(flat)))

        def iteration(carry, evaluate: bool):
            # One L-BFGS iteration, gated by ``live`` (the step has not ended) instead of
            # a while loop's exit: under vmap a while loop with a per-victim predicate
            # selects its whole carry, the 2 x history x n ring buffers included, after
            # every iteration; here only the one ring-buffer row a stored pair goes to is
            # written, and the direction and the evaluation sit in a ``lax.cond`` whose
            # outputs are vectors (skipped outright for a lone, finished victim).
            x, loss, g, st, n_local, evals, done = carry
            live = ~done
            n_iter = st.n_iter + 1
            first = n_iter == 1
            # Update the memory with the last move (not on the run's first iteration).
            y = g - st.prev_grad
            s = st.d * st.t
            ys = jnp.dot(y, s)
            store = live & ~first & (ys > CURVATURE_EPS)
            head, count = st.head, st.count
            dirs = st.dirs.at[head].set(jnp.where(store, y, st.dirs[head]))
            stps = st.stps.at[head].set(jnp.where(store, s, st.stps[head]))
            rho = st.rho.at[head].set(jnp.where(store, 1.0 / ys, st.rho[head]))
            h_diag = jnp.where(store, ys / jnp.dot(y, y), st.h_diag)
            head = jnp.where(store, (head + 1) % history_size, head)
            count = jnp.where(store, jnp.minimum(count + 1, history_size), count)
            head = jnp.where(live & first, 0, head)
            count = jnp.where(live & first, 0, count)
            h_diag = jnp.where(live & first, jnp.ones((), dtype), h_diag)

            def move(_):
                d = _two_loop(g, dirs, stps, rho, head, count, h_diag)
                t = jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(g))) * learning_rate,
                              learning_rate).astype(dtype)
                no_descent = jnp.dot(g, d) > -tolerance_change
                x_new = jnp.where(no_descent, x, x + t * d)
                if evaluate:
                    new_loss, new_g = value_and_grad(x_new)
                    new_loss = new_loss.astype(dtype)
                    moved = ~no_descent
                    loss_out = jnp.where(moved, new_loss, loss)
                    g_out = jnp.where(moved, new_g, g)
                    evals_out = evals + moved.astype(jnp.int32)
                    opt_cond = jnp.max(jnp.abs(g_out)) <= tolerance_grad
                    done_out = (no_descent | (evals_out >= max_eval) | opt_cond
                                | (jnp.max(jnp.abs(d * t)) <= tolerance_change)
                                | (jnp.abs(loss_out - loss) < tolerance_change)
                                | ~jnp.isfinite(loss_out))
                else:  # the step's last iteration: PyTorch does not evaluate the new point
                    loss_out, g_out, evals_out, done_out = loss, g, evals, jnp.asarray(True)
                return d, t, x_new, loss_out, g_out, evals_out, done_out

            def stay(_):
                return st.d, st.t, x, loss, g, evals, done

            d, t, x_new, loss_out, g_out, evals, done_out = lax.cond(live, move, stay, None)
            st = PytorchLBFGSState(
                jnp.where(live, n_iter, st.n_iter), st.func_evals, d, t,
                jnp.where(live, g, st.prev_grad), jnp.where(live, loss, st.prev_loss),
                dirs, stps, rho, head, count, h_diag)
            return (x_new, loss_out, g_out, st, n_local + live.astype(jnp.int32), evals,
                    done_out)

        value = jnp.asarray(value, dtype)
        done0 = jnp.max(jnp.abs(g0)) <= tolerance_grad
        carry = (x0, value, g0, state, jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32),
                 done0)
        # At most max_iter - 1 evaluated iterations, then the last one, unevaluated.
        carry = lax.fori_loop(0, max_iter - 1, lambda _, c: iteration(c, evaluate=True),
                              carry)
        x, _, _, new_state, _, evals, _ = iteration(carry, evaluate=False)
        new_state = new_state._replace(func_evals=state.func_evals + evals)
        return unravel(x - x0), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def optax_lbfgs(learning_rate: float | None = None, memory_size: int = 100,
                max_linesearch_steps: int = 15) -> optax.GradientTransformationExtraArgs:
    """``optax.lbfgs`` with its zoom line search; one ``update`` = one L-BFGS iteration.

    Args:
      learning_rate: optax's scale of the direction before the line search (None: 1,
        the line search picks the step).
      memory_size: curvature pairs kept (optax's default is 10; 100 as PyTorch).
      max_linesearch_steps: zoom line-search evaluations per iteration (optax's 15).
    """
    return optax.lbfgs(
        learning_rate=learning_rate, memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=max_linesearch_steps,
                                                  initial_guess_strategy="one"))


def make(semantics: str, *, history_size: int = 100, learning_rate: float = 1.0,
         max_iter: int = 20, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
         max_linesearch_steps: int = 15) -> tuple[optax.GradientTransformationExtraArgs, bool]:
    """The L-BFGS of one named semantics, for a :class:`~jgi.attacks.runner.Problem`.

    Args:
      semantics: "pytorch" (:func:`pytorch_lbfgs`) or "optax" (:func:`optax_lbfgs`).
      history_size: curvature pairs kept (both).
      learning_rate: PyTorch's fixed step; for "optax", the direction's scale before the
        line search.
      max_iter, tolerance_grad, tolerance_change: PyTorch's per-step settings.
      max_linesearch_steps: optax's line-search budget.

    Returns:
      ``(optimizer, needs_value_fn)``: pass both to the ``Problem``.
    """
    if semantics == "pytorch":
        return pytorch_lbfgs(learning_rate, max_iter, None, tolerance_grad, tolerance_change,
                             history_size), True
    if semantics == "optax":
        return optax_lbfgs(learning_rate, history_size, max_linesearch_steps), True
    raise ValueError(f"Unknown L-BFGS semantics {semantics!r}; valid: {', '.join(SEMANTICS)}.")


__all__ = ["SEMANTICS", "PytorchLBFGSState", "make", "optax_lbfgs", "pytorch_lbfgs"]
