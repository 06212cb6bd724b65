"""The PyTorch baseline of the benchmark computes jgi's IG step (skipped without torch)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import fl, models
from jgi.attacks import ig, runner

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import torch_reference  # noqa: E402


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_pytorch_ig_step_equals_jgi(shape):
    model = models.get("cnn")
    params = model.init(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (2, *shape))
    y = jnp.arange(2)
    updates = fl.victim_updates(model, params, x, y, {})
    cfg = ig.IGConfig()
    problem = ig.problem(model, shape, cfg)
    victims = {"target": updates, "label": y}
    context = {"params": params, "bounds": None}
    state = runner.init_state(problem, victims, context, jax.random.key(2))

    def loss(xi, victim):
        return problem.objective({"x": xi}, victim, context, jax.random.key(0))[0]

    losses, grads = jax.vmap(jax.value_and_grad(loss))(state.candidate["x"], victims)
    args = (params, updates, state.candidate["x"], y, shape, cfg.tv_weight)
    for impl in torch_reference.IMPLS:
        assert torch_reference.check_against_jgi(losses, grads, impl, *args) < 1e-6

    # One signed-Adam step moves the image as jgi's step does.
    step = jax.vmap(runner.make_step(problem, cfg.stopping()), in_axes=(0, 0, None))
    expected = np.asarray(step(state, victims, context).candidate["x"])
    for impl in torch_reference.IMPLS:
        attack = torch_reference.build(impl, *args)
        attack.step(1)
        xs = (attack.x.detach().numpy() if impl == "torch-func-vmap" else
              np.concatenate([v["x"].detach().numpy() for v in attack.victims]))
        np.testing.assert_allclose(xs.transpose(0, 2, 3, 1), expected, atol=1e-5)


@pytest.mark.slow  # dynamo's capture of vmap(grad(grad)): ~18 s at load 16, skipped in CI
def test_compiled_func_vmap_step_equals_uncompiled_and_jgi():
    # backend="eager": dynamo captures the graph (the part that can change what is
    # computed) without inductor's minutes of C++ code generation.
    shape = (28, 28, 1)
    model = models.get("cnn")
    params = model.init(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (2, *shape))
    y = jnp.arange(2)
    updates = fl.victim_updates(model, params, x, y, {})
    x0 = jax.random.normal(jax.random.key(2), (2, *shape))
    args = (params, updates, x0, y, shape, 0.01)
    compiled = torch_reference.build("torch-func-vmap-compile", *args, backend="eager")
    loss_err, grad_err = compiled.compiled_error()
    assert loss_err <= 1e-6 and grad_err <= 2e-9, (loss_err, grad_err)
    eager = torch_reference.build("torch-func-vmap", *args)
    for attack in (compiled, eager):
        attack.step(2)
    np.testing.assert_allclose(compiled.x.detach().numpy(), eager.x.detach().numpy(),
                               atol=1e-6)
