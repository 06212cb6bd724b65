import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgi.attacks import lbfgs, runner


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


STARTS = np.array([[-1.2, 1.0, -0.5, 0.8], [0.5, -0.3, 1.4, 0.2]], np.float32)


def _rosenbrock_problem(semantics):
    optimizer, needs_value_fn = lbfgs.make(semantics)
    return runner.Problem(
        init=lambda key, victim, context: {"x": victim["start"]},
        objective=lambda c, victim, context, key: (_rosenbrock(c["x"]), {}),
        optimizer=optimizer, project=lambda c, victim, context: c,
        needs_value_fn=needs_value_fn, restart_on_nan=True)


@pytest.mark.parametrize("semantics,steps", [("pytorch", 12), ("optax", 60)])
def test_both_semantics_converge_on_rosenbrock_vmapped_in_the_runner(semantics, steps):
    stopping = runner.StoppingRule(max_iters=steps, loss_below=1e-8, patience=steps)

    def run(starts):
        return runner.run(_rosenbrock_problem(semantics), {"start": jnp.asarray(starts)}, {},
                          jax.random.key(0), stopping, chunk_size=steps, progress=False,
                          compact=False)

    result = run(STARTS)
    # Measured: both victims below 1e-8 (PyTorch-style: 6-7 steps of 20 iterations;
    # optax: ~40 line-searched iterations), from losses of 24-236 at the starts.
    assert np.all(result.best_loss < 1e-8), result.best_loss
    np.testing.assert_allclose(result.best["x"], 1.0, atol=1e-3)
    if semantics == "pytorch":
        # vmapped over victims (a batched while loop, the other victim frozen once it
        # stopped) equals the second victim run alone.
        one = run(STARTS[1:])
        np.testing.assert_allclose(one.best["x"][0], result.best["x"][1], rtol=1e-6, atol=1e-6)
        assert one.iterations[0] == result.iterations[1]


def test_pytorch_semantics_match_torch_optim_lbfgs():
    torch = pytest.importorskip("torch")
    # A history of 2 pairs, which the ring buffer overwrites, 3 steps of 4 iterations.
    # Measured max |difference| 1.1e-5 (float32 rounding, amplified by Rosenbrock's
    # curvature; later steps diverge chaotically in either library).
    xt = torch.tensor(STARTS[0].copy(), requires_grad=True)
    opt = torch.optim.LBFGS([xt], lr=1, max_iter=4, history_size=2)
    ours = lbfgs.pytorch_lbfgs(max_iter=4, history_size=2)
    x = {"x": jnp.asarray(STARTS[0])}
    state = ours.init(x)
    f = lambda p: _rosenbrock(p["x"])  # noqa: E731

    @jax.jit
    def step(x, state):
        value, grad = jax.value_and_grad(f)(x)
        updates, state = ours.update(grad, state, x, value=value, value_fn=f)
        return optax.apply_updates(x, updates), state

    def closure():
        opt.zero_grad()
        loss = _torch_rosenbrock(xt)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
        x, state = step(x, state)
    np.testing.assert_allclose(np.asarray(x["x"]), xt.detach().numpy(), atol=1e-4)
    assert int(state.n_iter) == opt.state[xt]["n_iter"] == 12
    assert int(state.func_evals) == opt.state[xt]["func_evals"]
    assert int(state.count) == 2


def _torch_rosenbrock(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def test_restart_from_the_best_point_on_nan():
    # SGD with momentum overshoots into x > 3.5, where the loss and gradient are NaN.
    def problem(restart):
        def objective(c, victim, context, key):
            x = c["x"]
            return (x - 3.0) ** 2 * jnp.where(x > 3.5, jnp.nan, 1.0), {}
        return runner.Problem(lambda key, v, c: {"x": jnp.zeros(())}, objective,
                              optax.sgd(0.3, momentum=0.9), lambda c, v, ctx: c,
                              restart_on_nan=restart)

    victims = {"unused": jnp.zeros((1,))}
    outcomes = {}
    for restart in (False, True):
        p = problem(restart)
        state = runner.init_state(p, victims, {}, jax.random.key(0))
        step = jax.jit(jax.vmap(runner.make_step(p, runner.StoppingRule(100, 0.0, 100)),
                                in_axes=(0, 0, None)))
        xs = []
        for _ in range(30):
            state = step(state, victims, {})
            xs.append(float(state.candidate["x"][0]))
        outcomes[restart] = (np.array(xs), float(state.best_loss[0]))
    xs, best = outcomes[False]
    assert np.isnan(xs[-1]) and best > 1.0  # stuck at NaN from step 3; best 1.44 (x = 1.8)
    xs, best = outcomes[True]
    # Step 3 restarts at the best point (1.8) with zero momentum; measured best 1e-4.
    assert np.all(np.isfinite(xs)) and xs[2] == pytest.approx(1.8) and best < 1e-3
