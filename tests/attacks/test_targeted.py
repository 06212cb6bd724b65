"""The targeted attacks of the core paper: what each one knows, and that it is used."""

import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import defenses, fl, models
from jgi.attacks import ATTACKS, cdia, dia, dpia, ig, mimic, runner, vbia
from jgi.attacks.knowledge import MODES, Knowledge
from jgi.attacks.distances import cosine_distance
from jgi.defenses import pruning

SHAPE = (28, 28, 1)


def _client(stack_spec, n=2, sigma=1e-3):
    stack = defenses.from_names(stack_spec, dp=defenses.DPConfig(20.0, sigma))
    model = models.get("cnn", **stack.model_options())
    params = model.init(jax.random.key(0), SHAPE)
    x = jax.random.uniform(jax.random.key(1), (n, *SHAPE))
    y = jnp.arange(n) + 3
    r = fl.sample_victim_randomness(jax.random.key(2), model, params, stack, SHAPE, n)
    updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, r, stack))(params)
    return stack, model, params, x, y, r, updates


@pytest.mark.parametrize("spec", ["dropout", "cvb", "precode", "dp", "prune",
                                  "dropout,dp,prune,cvb"])
def test_wiig_dummy_update_of_the_true_image_equals_the_observed_update(spec):
    stack, model, params, x, y, r, updates = _client(spec)
    knowledge = ATTACKS["wiig"](stack)
    dummy = mimic.make_dummy_update(model, stack, knowledge, SHAPE)
    victims = {"target": updates, "label": y, "noise": r.model, "dp_noise": r.dp}
    context = {"params": params}
    got = jax.jit(jax.vmap(lambda c, v: dummy(c, v, context, jax.random.key(9))))(
        {"x": x}, victims)
    # The same function as the client's, compiled in another program: equal up to float
    # reassociation (observed: <= 1e-5 relative), and the distance is zero.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-8),
                 got, updates)
    for i in range(2):
        pick = lambda t: jax.tree.map(lambda a: a[i], t)  # noqa: E731
        assert float(cosine_distance(pick(got), pick(updates))) < 1e-6
    # ...whereas IG's dummy update of the true image does not match a stochastic client.
    if spec != "prune":
        ig_dummy = mimic.make_dummy_update(model, stack, mimic.Knowledge(), SHAPE)
        miss = jax.vmap(lambda c, v: ig_dummy(c, v, context, jax.random.key(9)))(
            {"x": x}, victims)
        assert float(cosine_distance(jax.tree.map(lambda a: a[0], miss),
                                     jax.tree.map(lambda a: a[0], updates))) > 1e-3


def test_gpia_mask_equals_the_clients_mask():
    stack, model, params, x, y, r, updates = _client("prune", sigma=0)
    stack9 = defenses.from_names("prune", prune=0.9)
    raw = jax.jit(lambda p: fl.victim_updates(model, p, x, y, r))(params)  # before pruning
    pruned = jax.vmap(lambda u: pruning.prune(u, 0.9))(raw)
    client_mask = jax.vmap(lambda u: pruning.pruning_mask(u, 0.9))(raw)
    jax.tree.map(np.testing.assert_array_equal, pruning.observed_mask(pruned), client_mask)
    assert ATTACKS["gpia"](stack9).prune == "observed"


def test_dia_masks_stay_in_the_unit_interval():
    stack, model, params, x, y, r, updates = _client("dropout")
    cfg = ig.IGConfig(max_iters=30, chunk_size=10)
    result = mimic.reconstruct(model, params, updates, y, jax.random.key(4), stack,
                               ATTACKS["dia"](stack), cfg, input_shape=SHAPE, progress=False)
    masks = np.concatenate([np.asarray(m).ravel() for m in jax.tree.leaves(result.best["masks"])])
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert 0.0 < masks.mean() < 1.0 and np.any((masks > 0) & (masks < 1))  # really relaxed


def _expected_cdia(names):
    return (("estimate" if "dropout" in names else "ignore"),
            ("estimate" if ("precode" in names or "cvb" in names) else "ignore"),
            "ignore",
            ("observed" if "prune" in names else "ignore"))


@pytest.mark.parametrize("names", defenses.ablation_stacks(), ids=lambda n: "+".join(n) or "none")
def test_cdia_configuration_for_each_of_the_24_stacks(names):
    k = cdia.knowledge_for(defenses.from_names(names))
    assert (k.dropout, k.bottleneck, k.dp, k.prune) == _expected_cdia(names)
    if not names or names == ["dp"]:
        assert k == mimic.Knowledge()  # plain IG


def test_single_defense_attacks_refuse_stacks_without_their_defense():
    for name, needs in [("dia", "dropout"), ("gpia", "pruning"), ("vbia", "PRECODE"),
                        ("dpia", "DP-SGD"), ("pig", "PRECODE")]:
        with pytest.raises(ValueError, match=needs):
            ATTACKS[name](defenses.from_names("none"))
    with pytest.raises(ValueError, match="client_noise="):
        stack, model, params, x, y, r, updates = _client("dropout")
        mimic.reconstruct(model, params, updates, y, jax.random.key(0), stack,
                          ATTACKS["wiig"](stack), input_shape=SHAPE, progress=False)


def test_pig_leaves_out_the_decoder_and_later_layers():
    model = models.get("cnn", bottleneck="cvb")
    params = model.init(jax.random.key(0), SHAPE)
    keep = model.leaves_before_bottleneck_decoder(params)
    paths = ["/".join(str(getattr(k, "key", k)) for k in p)
             for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    kept = {p for p, k in zip(paths, keep, strict=True) if k}
    assert kept == {"conv0/b", "conv0/w", "bottleneck/mu/w", "bottleneck/sigma/w"}


def test_ig_through_mimic_equals_plain_ig():
    stack, model, params, x, y, r, updates = _client("none")
    cfg = ig.IGConfig(max_iters=20, chunk_size=10)
    a = mimic.reconstruct(model, params, updates, y, jax.random.key(5), stack,
                          ATTACKS["ig"](stack), cfg, input_shape=SHAPE, progress=False)
    b = ig.reconstruct(model, params, updates, y, jax.random.key(5), cfg, input_shape=SHAPE,
                       progress=False)
    np.testing.assert_allclose(a.best["x"], b.best["x"], rtol=1e-5, atol=1e-6)


def test_cdia_runs_on_a_users_own_model():
    """A model written outside jgi, following the interface, with dropout."""
    from jgi.models.interface import Model

    def init(key, input_shape):
        k1, k2 = jax.random.split(key)
        d = int(np.prod(input_shape))
        return {"hidden": {"w": jax.random.normal(k1, (d, 32)) / np.sqrt(d),
                           "b": jnp.zeros(32)},
                "out": {"w": jax.random.normal(k2, (32, 10)) / np.sqrt(32), "b": jnp.zeros(10)}}

    def forward(params, x, noise):
        h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["hidden"]["w"] + params["hidden"]["b"])
        h = h * noise["dropout"]["hidden"] / 0.5
        return h @ params["out"]["w"] + params["out"]["b"], jnp.zeros(())

    def sample_noise(key, input_shape, batch):
        return {"dropout": {"hidden": jax.random.bernoulli(key, 0.5, (batch, 32)).astype(
            jnp.float32)}}

    model = Model("tiny", init, forward, sample_noise, classifier="out",
                  layer_order=("hidden", "out"), dropout=0.5)
    stack = defenses.DefenseStack(dropout=0.5)
    params = model.init(jax.random.key(0), (4, 4, 1))
    x, y = jax.random.uniform(jax.random.key(1), (3, 4, 4, 1)), jnp.array([1, 2, 3])
    r = fl.sample_victim_randomness(jax.random.key(2), model, params, stack, (4, 4, 1), 3)
    updates = fl.victim_updates(model, params, x, y, r, stack)
    result = cdia.reconstruct(model, params, updates, y, jax.random.key(3), stack,
                              ig.IGConfig(max_iters=20, chunk_size=10), input_shape=(4, 4, 1),
                              progress=False)
    assert result.best["masks"]["hidden"].shape == (3, 1, 32)
    assert set(runner.STOP_REASONS[s] for s in result.stop_reason) <= {"max_iters",
                                                                       "no_improvement"}


def test_cdia_docstring_example_runs():
    import doctest
    failures, tried = doctest.testmod(cdia, optionflags=doctest.ELLIPSIS)
    assert tried > 5 and failures == 0


def test_knowledge_modes_are_typed_literals_checked_at_runtime():
    hints = typing.get_type_hints(Knowledge)
    for field, valid in MODES.items():
        assert typing.get_args(hints[field]) == valid
    assert MODES["bottleneck"] == ("ignore", "known", "estimate", "exclude")
    with pytest.raises(ValueError, match="Knowledge.bottleneck='guess' is not one of ignore, "
                                         "known, estimate, exclude"):
        Knowledge(bottleneck="guess")
    assert mimic.Knowledge is Knowledge


def test_estimators_are_composed_in_a_fixed_order_with_distinct_keys():
    assert mimic.ESTIMATORS == (dia.ESTIMATOR, vbia.ESTIMATOR, dpia.ESTIMATOR)
    assert [e.name for e in mimic.ESTIMATORS] == ["masks", "eps", "xi"]
    assert [e.salt for e in mimic.ESTIMATORS] == [1, 2, 3]
    for e in mimic.ESTIMATORS:
        assert "estimate" in MODES[e.randomness] and e.name != "x"
    every = Knowledge(dropout="estimate", bottleneck="estimate", dp="estimate")
    assert mimic.estimators(every) == mimic.ESTIMATORS
    assert mimic.estimators(Knowledge(bottleneck="exclude", prune="observed")) == ()
    assert mimic.estimators(ATTACKS["cdia"](defenses.from_names("dropout,dp,cvb"))) == (
        dia.ESTIMATOR, vbia.ESTIMATOR)


def test_estimates_start_from_their_own_folded_keys_and_regularise_in_order():
    """The candidate and the loss, rebuilt by hand from each paper's estimator."""
    stack, model, params, x, y, r, updates = _client("dropout,dp,cvb")
    knowledge = Knowledge(dropout="estimate", bottleneck="estimate", dp="estimate",
                          mask_reg_weight=0.5, dp_reg_weight=0.25)
    cfg = ig.IGConfig()
    problem = mimic.problem(model, stack, knowledge, SHAPE, params, cfg)
    context = {"params": params, "bounds": None}
    victim = {"target": jax.tree.map(lambda a: a[0], updates), "label": y[0]}
    key = jax.random.key(7)
    c = jax.jit(problem.init)(key, victim, context)
    same = functools.partial(np.testing.assert_allclose, rtol=1e-6)  # jit vs eager rounding
    same(c["x"], cfg.init_std * jax.random.normal(key, SHAPE))
    jax.tree.map(same, c["masks"],
                 model.sample_noise(jax.random.fold_in(key, 1), SHAPE, 1)["dropout"])
    eps_shape = model.sample_noise(key, SHAPE, 1)["eps"].shape
    same(c["eps"],
                                  jax.random.normal(jax.random.fold_in(key, 2), eps_shape))
    jax.tree.map(same, c["xi"],
                 defenses.dp.sample_noise(jax.random.fold_in(key, 3), params, stack.dp))

    loss, aux = jax.jit(problem.objective)(c, victim, context, jax.random.key(8))
    np.testing.assert_allclose(aux["mask_reg"], dia.mask_regularizer(c["masks"], model, stack),
                               rtol=1e-6)
    np.testing.assert_allclose(aux["dp_reg"], dpia.noise_regularizer(c["xi"], model, stack),
                               rtol=1e-6)
    want = (aux["distance"] + cfg.tv_weight * aux["tv"] + 0.5 * aux["mask_reg"]
            + 0.25 * aux["dp_reg"])
    np.testing.assert_allclose(loss, want, rtol=1e-6)

    pushed = {**c, "masks": jax.tree.map(lambda m: m + 2.0, c["masks"]),
              "eps": c["eps"] + 9.0}
    projected = problem.project(pushed, victim, context)
    assert all(float(m.max()) == 1.0 for m in jax.tree.leaves(projected["masks"]))
    np.testing.assert_array_equal(projected["eps"], pushed["eps"])  # VBIA: unconstrained
