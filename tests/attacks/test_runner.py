import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgi import fl, models
from jgi.attacks import ig, runner
from jgi.checkpointing import AttackCheckpoint


def _quadratic_problem(lr=0.1):
    """Toy attack: find x close to the victim's target, a known answer."""
    def init(key, victim, context):
        return {"x": jnp.zeros_like(victim["target"])}

    def objective(candidate, victim, context, key):
        loss = jnp.sum((candidate["x"] - victim["target"]) ** 2)
        return loss, {}

    return runner.Problem(init=init, objective=objective, optimizer=optax.sgd(lr),
                          project=lambda c, v, ctx: c)


def test_per_victim_stopping_freezes_finished_victims():
    # Victim 0 starts at its target (loss 0 < 1e-5 at once); victim 1 converges slowly.
    victims = {"target": jnp.array([[0.0, 0.0], [3.0, -2.0]])}
    stopping = runner.StoppingRule(max_iters=50, loss_below=1e-5, patience=1000)
    result = runner.run(_quadratic_problem(lr=0.01), victims, {}, jax.random.key(0), stopping,
                        chunk_size=7, progress=False)
    assert runner.STOP_REASONS[result.stop_reason[0]] == "loss_below"
    assert result.iterations[0] == 1
    assert runner.STOP_REASONS[result.stop_reason[1]] == "max_iters"
    assert result.iterations[1] == 50  # exact, although 50 is not a multiple of chunk_size


def test_patience_stop_and_best_iterate():
    # lr 1.0 on sum(x - t)^2 oscillates between x = 0 and x = 2t: no improvement after step 1.
    victims = {"target": jnp.array([[1.0, 2.0]])}
    stopping = runner.StoppingRule(max_iters=1000, loss_below=1e-9, patience=5)
    result = runner.run(_quadratic_problem(lr=1.0), victims, {}, jax.random.key(0), stopping,
                        chunk_size=4, progress=False)
    assert runner.STOP_REASONS[result.stop_reason[0]] == "no_improvement"
    assert result.iterations[0] == 6  # best at the first iterate, then 5 without a new best
    np.testing.assert_allclose(result.best["x"][0], [0.0, 0.0])
    assert result.best_loss[0] == pytest.approx(5.0)


def _ig_setup(n=3, shape=(28, 28, 1)):
    model = models.get("cnn")
    params = model.init(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (n, *shape))
    y = jnp.arange(n) % 10
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, {}))(params)
    return model, params, updates, y


def test_vmapped_attack_step_equals_a_loop_over_victims():
    model, params, updates, y = _ig_setup(n=3)
    cfg = ig.IGConfig()
    problem = ig.problem(model, (28, 28, 1), cfg)
    victims = {"target": updates, "label": y}
    context = {"params": params, "bounds": (jnp.zeros(1) - 1, jnp.ones(1))}
    state = runner.init_state(problem, victims, context, jax.random.key(2))
    step = runner.make_step(problem, cfg.stopping())
    batched = jax.jit(jax.vmap(step, in_axes=(0, 0, None)))(state, victims, context)
    single = jax.jit(step)
    for i in range(3):
        pick = lambda tree: jax.tree.map(lambda leaf: leaf[i], tree)  # noqa: E731
        one = single(pick(state), pick(victims), context)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                     batched, one)


def test_same_seed_same_reconstructions_and_different_seed_different():
    model, params, updates, y = _ig_setup(n=2)
    cfg = ig.IGConfig(max_iters=30, chunk_size=10)
    run = lambda seed: ig.reconstruct(model, params, updates, y, jax.random.key(seed), cfg,  # noqa: E731
                                      input_shape=(28, 28, 1), progress=False)
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.best["x"], b.best["x"])
    assert not np.allclose(a.best["x"], c.best["x"])


class _Interrupt(AttackCheckpoint):
    """Saves every chunk and raises KeyboardInterrupt after ``after`` saves."""

    def __init__(self, directory, after):
        super().__init__(directory, every_seconds=0.0)
        self.after = after

    def due(self):
        return True

    def save(self, state):
        super().save(state)
        self.after -= 1
        if self.after == 0:
            raise KeyboardInterrupt


def test_interrupted_attack_resumes_to_the_same_result(tmp_path):
    model, params, updates, y = _ig_setup(n=2)
    cfg = ig.IGConfig(max_iters=60, chunk_size=20)
    kwargs = dict(input_shape=(28, 28, 1), progress=False)
    key = jax.random.key(3)
    uninterrupted = ig.reconstruct(model, params, updates, y, key, cfg, **kwargs)
    with pytest.raises(KeyboardInterrupt):
        ig.reconstruct(model, params, updates, y, key, cfg,
                       checkpoint=_Interrupt(tmp_path / "ck", after=2), **kwargs)
    resumed_ckpt = AttackCheckpoint(tmp_path / "ck")
    resumed = ig.reconstruct(model, params, updates, y, key, cfg, checkpoint=resumed_ckpt,
                             **kwargs)
    assert resumed_ckpt.restored_iteration == 40
    np.testing.assert_array_equal(resumed.best["x"], uninterrupted.best["x"])
    np.testing.assert_array_equal(resumed.iterations, uninterrupted.iterations)


def test_checkpoint_of_another_attack_is_refused(tmp_path):
    model, params, updates, y = _ig_setup(n=2)
    cfg = ig.IGConfig(max_iters=20, chunk_size=10)
    ck = AttackCheckpoint(tmp_path / "ck", every_seconds=0.0)
    ig.reconstruct(model, params, updates, y, jax.random.key(0), cfg, input_shape=(28, 28, 1),
                   progress=False, checkpoint=ck)
    model3, params3, updates3, y3 = _ig_setup(n=3)
    with pytest.raises(ValueError, match="does not match this run"):
        ig.reconstruct(model3, params3, updates3, y3, jax.random.key(0), cfg,
                       input_shape=(28, 28, 1), progress=False,
                       checkpoint=AttackCheckpoint(tmp_path / "ck"))


def test_victim_arrays_must_share_the_leading_axis():
    with pytest.raises(ValueError, match="same leading victim axis"):
        runner.run(_quadratic_problem(), {"target": jnp.zeros((2, 3)), "other": jnp.zeros(3)},
                   {}, jax.random.key(0), progress=False)


def test_compaction_changes_nothing_but_the_batch():
    # Eight victims at distances that make them stop at very different iterations.
    targets = jnp.stack([jnp.full((3,), 10.0 ** (i / 2 - 2)) for i in range(8)])
    victims = {"target": targets}
    stopping = runner.StoppingRule(max_iters=400, loss_below=1e-6, patience=1000)
    args = (_quadratic_problem(lr=0.02), victims, {}, jax.random.key(0), stopping)
    compact = runner.run(*args, chunk_size=10, progress=False, compact=True)
    full = runner.run(*args, chunk_size=10, progress=False, compact=False)
    assert len(set(compact.iterations.tolist())) > 3  # stopping times really differ
    np.testing.assert_array_equal(compact.iterations, full.iterations)
    np.testing.assert_array_equal(compact.best["x"], full.best["x"])
    np.testing.assert_array_equal(compact.stop_reason, full.stop_reason)


def _small_attack(attack, n=2, shape=(12, 12, 1)):
    from jgi import defenses
    from jgi.attacks import mimic
    stack = defenses.from_names("dropout" if attack == "dia" else "none")
    model = models.get("cnn", channels=(4, 8), **stack.model_options())
    params = model.init(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (n, *shape))
    y = jnp.arange(n)
    client = fl.sample_victim_randomness(jax.random.key(3), model, params, stack, shape, n)
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, client, stack))(params)
    cfg = ig.IGConfig(max_iters=30, chunk_size=10)
    if attack == "ig":
        problem = ig.problem(model, shape, cfg)
    else:
        problem = mimic.problem(model, stack, mimic.Knowledge(dropout="estimate"), shape,
                                params, cfg)
    return problem, cfg, {"target": updates, "label": y}, {"params": params, "bounds": None}


def test_materialized_gradient_gives_the_plain_gradient():
    # DIA: the masks' gradient drives Adam unsigned, so any difference would show. After
    # one step Adam's first moment is (1 - b1) * the (signed, for the image) gradient.
    problem, cfg, victims, context = _small_attack("dia")
    state = runner.init_state(problem, victims, context, jax.random.key(2))
    out = {}
    for materialize in (False, True):
        chunk = jax.jit(runner.make_chunk(problem, cfg.stopping(), 1,
                                          materialize_gradient=materialize))
        out[materialize] = chunk(state, victims, context)
    plain, fast = out[False], out[True]
    mu_plain, mu_fast = plain.opt_state[1][0].mu, fast.opt_state[1][0].mu
    for a, b in zip(jax.tree.leaves(mu_plain), jax.tree.leaves(mu_fast), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max()))
    np.testing.assert_allclose(fast.best_loss, plain.best_loss, rtol=1e-6)
    np.testing.assert_array_equal(fast.candidate["x"], plain.candidate["x"])


def test_materialized_gradient_gives_the_plain_reconstructions(monkeypatch):
    problem, cfg, victims, context = _small_attack("ig")
    args = (problem, victims, context, jax.random.key(5), cfg.stopping())
    fast = runner.run(*args, chunk_size=cfg.chunk_size, progress=False)
    make_chunk = runner.make_chunk
    monkeypatch.setattr(runner, "make_chunk", lambda *a, **k: make_chunk(
        *a, **k, materialize_gradient=False))
    plain = runner.run(*args, chunk_size=cfg.chunk_size, progress=False)
    np.testing.assert_array_equal(fast.iterations, plain.iterations)
    np.testing.assert_allclose(fast.best_loss, plain.best_loss, rtol=1e-6)
    np.testing.assert_allclose(fast.best["x"], plain.best["x"], atol=1e-6)


def test_patch_convolutions_give_the_lax_convolution_reconstructions():
    # The fast formulation (convolutions as patches x matmul) must not change what the
    # attack finds: same victims, same key, the two CNNs reconstruct the same images.
    # 16x16 and 30 iterations: lax convolutions inside the scan are slow with XLA's
    # optimisations off (97 s at 28x28 x 60 iterations on a loaded 2-core machine).
    shape = (16, 16, 1)
    x = jax.random.uniform(jax.random.key(1), (2, *shape))
    y = jnp.arange(2)
    cfg = ig.IGConfig(max_iters=30, chunk_size=10, plateau_patience=10)
    results = []
    for impl in ("patches", "lax"):
        model = models.get("cnn", conv_impl=impl)
        params = model.init(jax.random.key(0), shape)
        updates = jax.jit(lambda p, m=model: fl.victim_updates(m, p, x, y, {}))(params)
        results.append(ig.reconstruct(model, params, updates, y, jax.random.key(2), cfg,
                                      input_shape=shape, progress=False))
    fast, plain = results
    np.testing.assert_array_equal(fast.iterations, plain.iterations)
    np.testing.assert_allclose(fast.best_loss, plain.best_loss, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(fast.best["x"], plain.best["x"], atol=1e-3)


@pytest.mark.parametrize("attack", ["ig", "dia"])
def test_victim_tiles_give_the_untiled_chunk(attack):
    # 5 victims in tiles of 2: three tiles of uneven size (1 or 2 victims).
    problem, cfg, victims, context = _small_attack(attack, n=5)
    state = runner.init_state(problem, victims, context, jax.random.key(5))
    out = {}
    for tile in (None, 2):
        chunk = jax.jit(runner.make_chunk(problem, cfg.stopping(), 10, victim_tile=tile))
        out[tile] = chunk(state, victims, context)
    np.testing.assert_array_equal(out[None].iteration, out[2].iteration)
    np.testing.assert_allclose(out[None].best_loss, out[2].best_loss, rtol=1e-6)
    np.testing.assert_allclose(out[None].candidate["x"], out[2].candidate["x"], atol=1e-6)
