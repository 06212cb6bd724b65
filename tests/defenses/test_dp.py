import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jgi import fl, models
from jgi.defenses import dp

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), clip=st.floats(1e-3, 50.0),
       scale=st.floats(1e-4, 1e3), batch=st.integers(1, 6))
def test_every_clipped_per_example_norm_is_at_most_tau(seed, clip, scale, batch):
    k1, k2 = jax.random.split(jax.random.key(seed))
    per_example = {"w": scale * jax.random.normal(k1, (batch, 3, 4)),
                   "b": scale * jax.random.normal(k2, (batch, 5))}
    norms_before = dp.global_norms(per_example)
    clipped = dp.clip_per_example(per_example, clip)
    norms = dp.global_norms(clipped)
    assert np.all(np.asarray(norms) <= clip * (1 + 1e-5))
    # Examples already within the bound are left unchanged; the others land on it.
    small = np.asarray(norms_before) <= clip
    np.testing.assert_allclose(np.asarray(norms)[small], np.asarray(norms_before)[small],
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(norms)[~small], clip, rtol=1e-4)


def test_sum_of_clipped_gradients_equals_jax_privacy():
    clipping = pytest.importorskip("jax_privacy.clipping")
    model = models.get("cnn")
    params = model.init(jax.random.key(0), (28, 28, 1))
    x = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
    y = jnp.arange(5)
    tau = 0.3  # small enough that every example is clipped
    ours = dp.privatize(fl.per_example_gradients(model, params, x, y, {}),
                        dp.DPConfig(clip_norm=tau, noise_multiplier=0.0),
                        jax.tree.map(jnp.zeros_like, params))
    loss = lambda p, xb, yb: fl.client_loss(model, p, xb, yb, {})  # noqa: E731
    oracle = clipping.clipped_grad(loss, l2_clip_norm=tau, batch_argnums=(1, 2),
                                   keep_batch_dim=True)(params, x, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a * 5, b, rtol=1e-4, atol=1e-6),
                 ours, oracle)


def test_same_key_same_noise_and_supplied_noise_is_used_exactly():
    cfg = dp.DPConfig(clip_norm=20.0, noise_multiplier=1e-3)
    like = {"w": jnp.zeros((64, 32)), "b": jnp.zeros(32)}
    a = dp.sample_noise(jax.random.key(7), like, cfg)
    b = dp.sample_noise(jax.random.key(7), like, cfg)
    c = dp.sample_noise(jax.random.key(8), like, cfg)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.allclose(a["w"], c["w"])
    assert np.std(np.asarray(a["w"])) == pytest.approx(cfg.noise_std, rel=0.05)

    per_example = {"w": jnp.ones((2, 64, 32)) * 1e-3, "b": jnp.ones((2, 32)) * 1e-3}
    tx = dp.dp_sgd(cfg)
    out, _ = tx.update(dp.PerExample(per_example), tx.init(None), noise=a)
    expected = jax.tree.map(lambda g, xi: (g.sum(0) + xi) / 2, per_example, a)
    jax.tree.map(np.testing.assert_array_equal, out, expected)
    sampled, _ = tx.update(dp.PerExample(per_example), tx.init(None), key=jax.random.key(7))
    jax.tree.map(np.testing.assert_array_equal, sampled, expected)
    with pytest.raises(ValueError, match="exactly one of key"):
        tx.update(dp.PerExample(per_example), tx.init(None))
    with pytest.raises(ValueError, match="clips each example's gradient"):
        tx.update(per_example, tx.init(None), noise=a)  # averaged gradients cannot be clipped


def test_epsilon_agrees_with_dp_accounting_called_by_hand():
    dpa = pytest.importorskip("dp_accounting")
    cfg = dp.DPConfig(clip_norm=20.0, noise_multiplier=1.1)
    steps, q = 85 * 10, 64 / 5400  # 10 local epochs of a 5,400-image client, batch 64
    event = dpa.SelfComposedDpEvent(
        dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(1.1)), steps)
    accountant = dpa.rdp.RdpAccountant()
    accountant.compose(event)
    assert dp.epsilon(cfg, steps=steps, sampling_rate=q) == pytest.approx(
        accountant.get_epsilon(1e-5), rel=1e-9)
    # The paper's sigma = 1e-3 gives no meaningful guarantee.
    assert dp.epsilon(dp.DPConfig(20.0, 1e-3), steps=steps, sampling_rate=q) > 1e6


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        dp.DPConfig(clip_norm=0.0)
    with pytest.raises(ValueError, match="noise_multiplier must be >= 0"):
        dp.DPConfig(noise_multiplier=-1.0)
