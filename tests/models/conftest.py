"""Fixtures shared by the model tests: one CDIA step against a model under a defense stack."""

import jax
import jax.numpy as jnp
import pytest

from jgi import defenses, fl, models
from jgi.attacks import ATTACKS, ig, mimic, runner


@pytest.fixture
def cdia_step():
    """``(name, spec, input_shape, **options) -> (model, params, state, new_state)``.

    Builds the stack from ``spec``, the model with ``models.get(name,
    **stack.model_options(), **options)``, two victims' updates through
    :func:`jgi.fl.victim_updates`, and runs one jitted step of the CDIA configured for
    the stack (``mimic.problem`` through ``runner.init_state`` and ``runner.make_step``).
    The params and the updates are computed op by op: across the parametrised stacks
    their operations repeat with the same shapes and are compiled once, whereas a jit
    per stack would compile each program anew (the step's jit includes the client's
    computation anyway, on the dummy image).
    """
    def run(name, spec, input_shape, n=2, **options):
        stack = defenses.from_names(spec)
        model = models.get(name, **stack.model_options(), **options)
        params = model.init(jax.random.key(0), input_shape)
        x = jax.random.uniform(jax.random.key(1), (n, *input_shape))
        y = jnp.arange(n) + 3
        r = fl.sample_victim_randomness(jax.random.key(2), model, params, stack, input_shape, n)
        updates = fl.victim_updates(model, params, x, y, r, stack)
        config = ig.IGConfig()
        problem = mimic.problem(model, stack, ATTACKS["cdia"](stack), input_shape, params,
                                config)
        victims = {"target": updates, "label": y}
        context = {"params": params, "bounds": None}
        state = runner.init_state(problem, victims, context, jax.random.key(3))
        step = jax.jit(jax.vmap(runner.make_step(problem, config.stopping()),
                                in_axes=(0, 0, None)))
        return model, params, state, step(state, victims, context)

    return run
