"""The candidate explanations of the core paper's DP rows: each changes what it names only."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import defenses, models
from jgi.attacks import authors, cdia, mimic
from jgi.attacks.ig import IGConfig
from jgi.attacks.knowledge import Knowledge
from jgi.attacks.regularizers import total_variation

SHAPE = (8, 8, 1)
CHANNELS = (4, 4, 4)
STACK_NAMES = ("dp", "dp,prune", "dropout,dp", "dp,cvb", "dp,precode")


@pytest.mark.parametrize("spec", STACK_NAMES)
def test_the_none_candidate_is_cdia_unchanged(spec):
    stack = defenses.from_names(spec)
    none = authors.get("none")
    assert none == authors.Candidate("none")
    assert none.knowledge(stack) == cdia.knowledge_for(stack)
    assert none.ig_config(IGConfig(), stack) == IGConfig()
    model = models.get("cnn", channels=CHANNELS, **stack.model_options())
    assert none.model(model) is model
    # CDIA's defaults: no DP on the dummy update, the estimates unsigned, at the image's lr.
    k = cdia.knowledge_for(stack)
    assert (k.dp, k.estimate_lr_scale, k.signed_estimates) == ("ignore", 1.0, False)


def test_each_candidate_changes_only_its_own_setting():
    base = IGConfig()
    for spec in STACK_NAMES:
        stack = defenses.from_names(spec)
        cd = cdia.knowledge_for(stack)
        combined = stack.dropout > 0 or stack.bottleneck is not None
        k1 = authors.get("fresh-dp").knowledge(stack)
        assert k1 == dataclasses.replace(cd, dp="fresh")
        k2 = authors.get("dp-estimate").knowledge(stack)
        # DPIA only where DP is combined with dropout or a bottleneck; DP alone and
        # DP + GP stay IG (+ GPIA), as the paper says CDIA does for "only DP".
        assert k2 == dataclasses.replace(cd, dp="estimate" if combined else "ignore")
        assert authors.get("est-lr-0.1").knowledge(stack) == dataclasses.replace(
            cd, estimate_lr_scale=0.1)
        assert authors.get("est-sign").knowledge(stack) == dataclasses.replace(
            cd, signed_estimates=True)
        assert authors.get("tv-0.1").ig_config(base, stack) == dataclasses.replace(
            base, tv_weight=0.1)
        assert authors.get("dia-patience-800").ig_config(base, stack) == (
            dataclasses.replace(base, plateau_patience=800) if stack.dropout > 0 else base)
        for name in ("fresh-dp", "dp-estimate", "est-lr-0.1", "est-sign", "tv-0.1",
                     "dia-patience-800"):
            model = models.get("cnn", channels=CHANNELS, **stack.model_options())
            assert authors.get(name).model(model) is model
        for name in ("tv-0.1", "dia-patience-800", "authors-cvb-kl", "authors-layout"):
            assert authors.get(name).knowledge(stack) == cd


def test_fresh_dp_noise_differs_every_iteration_and_default_dummy_is_fixed():
    stack = defenses.from_names("dp")
    model = models.get("cnn", channels=CHANNELS)
    params = model.init(jax.random.key(0), SHAPE)
    victim = {"target": params, "label": jnp.asarray(3)}  # the target is not used here
    context = {"params": params}
    candidate = {"x": jax.random.normal(jax.random.key(1), SHAPE)}
    fresh = mimic.make_dummy_update(model, stack, Knowledge(dp="fresh"), SHAPE)
    default = mimic.make_dummy_update(model, stack, cdia.knowledge_for(stack), SHAPE)
    keys = jax.random.split(jax.random.key(11), 2)
    f, d = jax.jit(lambda ks: (jax.vmap(lambda k: fresh(candidate, victim, context, k))(ks),
                               jax.vmap(lambda k: default(candidate, victim, context, k))(ks)))(
        keys)
    first, second = (lambda t, i=i: jax.tree.map(lambda a: a[i], t) for i in (0, 1))
    diff = lambda a, b: max(jax.tree.leaves(jax.tree.map(  # noqa: E731
        lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)))
    assert diff(first(d), second(d)) == 0.0  # IG's dummy update: no DP, fixed every step
    # sigma tau = 1e-4 * 20 = 2e-3: two draws differ by about that much (seen ~1e-2 max).
    assert diff(first(f), second(f)) > 1e-4
    # The gradient's norm is below tau = 20 (no clipping), so the fresh update is the
    # plain gradient plus exactly the noise drawn from fold_in(key, 1).
    assert float(defenses.dp.global_norms(jax.tree.map(lambda a: a[:1], d))[0]) < 20.0
    xi = defenses.dp.sample_noise(jax.random.fold_in(keys[0], 1), params, stack.dp)
    assert diff(jax.tree.map(jnp.subtract, first(f), first(d)), xi) < 1e-6
    with pytest.raises(ValueError, match="DP-SGD"):
        mimic.make_dummy_update(model, defenses.from_names(""), Knowledge(dp="fresh"), SHAPE)


def _one_step(knowledge, grad):
    opt = mimic.optimizer(IGConfig(), knowledge)
    params = jax.tree.map(jnp.zeros_like, grad)
    updates, _ = opt.update(grad, opt.init(params), params, value=jnp.asarray(1.0))
    return updates


def test_estimate_lr_scale_and_sign_act_on_the_estimates_only():
    grad = {"x": jnp.array([0.5, -2.0]), "eps": jnp.array([0.3, -0.04]),
            "masks": {"conv0": jnp.array([1e-3, -7.0])}}
    base = _one_step(Knowledge(), grad)
    scaled = _one_step(Knowledge(estimate_lr_scale=0.1), grad)
    signed = _one_step(Knowledge(signed_estimates=True), grad)
    np.testing.assert_array_equal(scaled["x"], base["x"])
    np.testing.assert_array_equal(signed["x"], base["x"])
    for key in ("eps", "masks"):
        jax.tree.map(lambda s, b: np.testing.assert_allclose(s, 0.1 * b, rtol=1e-6),
                     scaled[key], base[key])
    # Adam's first step is -lr * g / (|g| + eps_adam): unsigned it depends on |g| a little
    # (1e-3 vs 1e-8 makes no difference, so compare with the sign's step directly).
    want_signed = _one_step(Knowledge(), {**grad, "eps": jnp.sign(grad["eps"]),
                                          "masks": jax.tree.map(jnp.sign, grad["masks"])})
    jax.tree.map(lambda s, w: np.testing.assert_allclose(s, w, rtol=1e-6), signed, want_signed)


def test_tv_weight_is_read_from_the_candidate():
    stack = defenses.from_names("dp")
    model = models.get("cnn", channels=CHANNELS)
    params = model.init(jax.random.key(0), SHAPE)
    x = jax.random.normal(jax.random.key(1), (1, *SHAPE))
    cfg = authors.get("tv-0.1").ig_config(IGConfig(), stack)
    problem = mimic.problem(model, stack, cdia.knowledge_for(stack), SHAPE, params, cfg)
    victim = {"target": params, "label": jnp.asarray(3)}  # any target: the sum is checked
    loss, aux = jax.jit(lambda: problem.objective({"x": x[0]}, victim, {"params": params},
                                                  jax.random.key(3)))()
    np.testing.assert_allclose(float(aux["tv"]), float(total_variation(x[0])), rtol=1e-6)
    np.testing.assert_allclose(float(loss), float(aux["distance"] + 0.1 * aux["tv"]),
                               rtol=1e-6)


def test_authors_cvb_kl_changes_the_penalty_only():
    stack = defenses.from_names("dropout,cvb")
    model = models.get("cnn", channels=CHANNELS, **stack.model_options())
    params = model.init(jax.random.key(0), SHAPE)
    x = jax.random.normal(jax.random.key(1), (2, *SHAPE))
    noise = model.sample_noise(jax.random.key(2), SHAPE, 2)
    wrapped = authors.get("authors-cvb-kl").model(model)
    assert dict(wrapped.options)["cvb_kl"] == "authors"
    (logits, penalty), (w_logits, w_penalty), true_penalty, (mu, s) = jax.jit(lambda: (
        model.forward(params, x, noise), wrapped.forward(params, x, noise),
        authors.true_cvb_kl_penalty(model, params, x, noise),
        authors.cvb_statistics(model, params, x, noise)))()
    np.testing.assert_array_equal(w_logits, logits)
    # The recomputed mu/sigma are the model's: jgi's KL from them is the model's penalty.
    np.testing.assert_allclose(true_penalty, penalty, rtol=1e-5)
    hand = 0.1 * np.mean(np.sum(-0.5 * (1 + s - mu ** 2 - np.exp(s)), axis=-1))
    np.testing.assert_allclose(float(w_penalty), hand, rtol=1e-5)
    assert abs(float(w_penalty) - float(penalty)) > 1e-4  # a different KL (seen ~0.02)
    # Candidate 5 leaves models without a CVB alone and refuses other CVB models.
    plain = models.get("cnn", channels=CHANNELS, bottleneck="precode")
    assert authors.get("authors-cvb-kl").model(plain) is plain
    with pytest.raises(ValueError, match="CNN with a CVB"):
        authors.with_authors_cvb_kl(plain)


def test_bad_candidates_and_knowledge_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="valid: none, fresh-dp"):
        authors.get("fresh")
    with pytest.raises(ValueError, match="choose one"):
        authors.Candidate("x", fresh_dp=True, estimate_dp_when_combined=True)
    with pytest.raises(ValueError, match="layout"):
        authors.Candidate("x", layout="torch")
    with pytest.raises(ValueError, match="estimate_lr_scale must be > 0"):
        Knowledge(estimate_lr_scale=0.0)
    with pytest.raises(ValueError, match="is not one of ignore, known, estimate, fresh"):
        Knowledge(dp="sampled")


def test_the_experiment_reuses_a_row_a_candidate_does_not_change_and_prints_the_paper():
    from experiments import dp_candidates as exp

    # Estimate options change nothing when nothing is estimated (DP alone): same identity.
    dp = defenses.from_names("dp")
    assert exp.effective(authors.get("est-sign").knowledge(dp)) == cdia.knowledge_for(dp)
    cvb = defenses.from_names("dp,cvb")
    assert exp.effective(authors.get("est-sign").knowledge(cvb)).signed_estimates
    rows = [{"candidate": "none", "stack": "DP + CVB", "ssim_mean": 0.8, "asr": 1.0}]
    text = exp.markdown(rows, ["none", "fresh-dp"], ["DP + CVB", "DP"])
    assert "| **paper (Table 4, CDIA)** | | 0.14 / 0.0% | 0.93 / 100.0% |" in text
    assert "| `none` (CDIA as jgi runs it) | 0 | 0.80 / 100.0% | – |" in text
    assert "| `fresh-dp` (" in text and text.count("–") >= 3


@pytest.mark.parametrize("spec", STACK_NAMES + ("dropout", "cvb", "none"))
def test_cdia_dp_estimate_attack_is_cdia_with_dpia_only_where_dp_is_combined(spec):
    stack = defenses.from_names(spec)
    k = authors.cdia_dp_estimate_knowledge_for(stack)
    combined = stack.dp is not None and (stack.dropout > 0 or stack.bottleneck is not None)
    assert k == dataclasses.replace(cdia.knowledge_for(stack),
                                    dp="estimate" if combined else "ignore")
    # registered for the ablation's --attack (opt-in: the default stays cdia)
    from jgi.attacks import ATTACKS
    assert ATTACKS["cdia-dpia"](stack) == k


def test_the_experiment_keys_rows_by_every_setting_and_reuses_them(tmp_path, mnist_sample):
    from experiments import dp_candidates as exp
    from jgi import pipeline, results

    config = pipeline.AblationConfig(model="cnn", dataset="mnist", victims=2,
                                     ig=IGConfig(max_iters=5), data_source="embedded")
    store = results.KeyedRows(tmp_path / "results.jsonl", report=False)
    none, est = authors.get("none"), authors.get("dp-estimate")
    assert exp.row(config, mnist_sample, none, "DP", store, compute=False) is None
    ident = exp.identity(config, mnist_sample, none, "DP")[0]
    store.add(ident, {"candidate": "none", "stack": "DP", "ssim_mean": 0.5, "asr": 0.0})
    # A fresh store on the same file (a rerun of the same command) finds the row, and a
    # candidate that computes the same thing on DP alone reuses it under its own name.
    again = results.KeyedRows(tmp_path / "results.jsonl", report=False)
    got = exp.row(config, mnist_sample, est, "DP", again, compute=False)
    assert (got["candidate"], got["ssim_mean"]) == ("dp-estimate", 0.5)
    # Every setting is in the key: the estimate on DP + CVB, more iterations, another
    # seed or another victim count are other rows.
    assert exp.row(config, mnist_sample, est, "DP + CVB", again, compute=False) is None
    for changed in (dataclasses.replace(config, ig=IGConfig(max_iters=6)),
                    dataclasses.replace(config, seed=1),
                    dataclasses.replace(config, victims=3)):
        assert exp.row(changed, mnist_sample, none, "DP", again, compute=False) is None
