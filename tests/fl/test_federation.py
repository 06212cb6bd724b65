import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import fl, models
from jgi.defenses import NO_DEFENSE
from jgi.fl import federation as fed

SHAPE = (6, 6, 1)
# One model and one local training for the whole file, so the compiled local trainings
# (one per client size) are shared by the tests.
MODEL = models.get("mlp", width=16)
LOCAL = fl.LocalTraining(epochs=2, batch_size=8, lr=0.1, lr_decay=0.5, momentum=0.5,
                         weight_decay=1e-3)
SIZES = (16, 24)  # unequal clients, whole batches of 8


def _clients(seed=0):
    """Two clients whose label is the sign of the image's mean (learnable), 4 held out each."""
    rng = np.random.default_rng(seed)
    n = sum(SIZES) + 8 + 20
    x = rng.normal(size=(n, *SHAPE)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    x += np.where(y == 1, 0.5, -0.5)[:, None, None, None].astype(np.float32)
    bounds = np.cumsum((0,) + SIZES)
    shares = fl.ClientShares(
        train_idx=tuple(np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)),
        test_idx=(np.arange(40, 44), np.arange(44, 48)))
    return fed.clients_from_shares(x, y, shares), x[48:], y[48:]


def _max_diff(a, b):
    return max(float(jnp.abs(u - v).max()) for u, v in zip(jax.tree.leaves(a),
                                                           jax.tree.leaves(b), strict=True))


def test_the_hooks_observation_is_the_clients_own_update_and_the_average_is_weighted():
    clients, _, _ = _clients()
    params = MODEL.init(jax.random.key(0), SHAPE)
    config = fed.FederationConfig(rounds=2, local=LOCAL, attack_clients=(0, 1))
    seen = {}

    def hook(r, c, obs, data):
        seen[c] = (obs, data)
        return r * 10 + c

    key = jax.random.key(5)
    new_params, _, records = fed.run_round(MODEL, NO_DEFENSE, config, clients, params, 1, key,
                                           hook)
    assert [(r.round, r.client, r.output) for r in records] == [(1, 0, 10), (1, 1, 11)]
    for c in (0, 1):
        obs, (x, y) = seen[c]
        assert obs.num_samples == SIZES[c] and obs.round == 1 and obs.local == LOCAL
        np.testing.assert_array_equal(x, clients.x_train[c])
        np.testing.assert_array_equal(y, clients.y_train[c])
        assert _max_diff(obs.update, jax.tree.map(jnp.zeros_like, params)) > 1e-3
    # The server's own run of client 1 (round 1: lr 0.05) gives the same update. (Client 0
    # is left out only to save a compilation; the average below ties both updates.)
    obs, (x, y) = seen[1]
    k_train, _ = fed.client_round_keys(key, 1)
    own = fl.observe(MODEL, params, jnp.asarray(x), jnp.asarray(y), k_train, local=LOCAL,
                     round_index=1)
    assert _max_diff(own.update, obs.update) < 1e-6  # measured 0.0 on CPU
    w = np.array(SIZES) / sum(SIZES)  # 0.4, 0.6: weighted by sample count
    expected = jax.tree.map(lambda p, u0, u1: p - w[0] * u0 - w[1] * u1, params,
                            seen[0][0].update, seen[1][0].update)
    assert _max_diff(new_params, expected) < 1e-6  # measured 3e-8
    unweighted = jax.tree.map(lambda p, u0, u1: p - 0.5 * (u0 + u1), params,
                              seen[0][0].update, seen[1][0].update)
    assert _max_diff(new_params, unweighted) > 1e-3  # measured 0.011


@pytest.fixture(scope="module")
def three_rounds():
    clients, x_test, y_test = _clients()
    config = fed.FederationConfig(rounds=3, local=LOCAL, attack_clients=(1,))
    result = fed.train(MODEL, clients, x_test, y_test, jax.random.key(2), config,
                       attack=lambda r, c, obs, data: float(obs.update["dense"]["w"].sum()))
    return clients, x_test, y_test, config, result


def test_a_tiny_federation_learns_and_records_the_attack_and_every_clients_accuracy(
        three_rounds):
    _, _, _, _, result = three_rounds
    h = result.history
    assert result.rounds == 3 and h["round"] == [1, 2, 3]
    assert [(a.round, a.client) for a in result.attacks] == [(0, 1), (1, 1), (2, 1)]
    assert len(h["client_accuracy"]) == 3 and all(len(a) == 2 for a in h["client_accuracy"])
    # Measured (seeds 2-4): train loss 1.77 -> 0.17-0.25; test and held-out accuracy 1.0
    # from round 1 on; chance is 0.5.
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]
    assert h["test_accuracy"][-1] >= 0.8 and h["heldout_accuracy"][-1] >= 0.75


def test_an_interrupted_run_resumes_to_the_same_parameters(three_rounds, tmp_path):
    clients, x_test, y_test, config, whole = three_rounds

    class Interrupt(Exception):
        pass

    def stop_in_round_two(r, c, obs, data):
        if r == 1:
            raise Interrupt
        return 0.0

    ckpt = fed.federation_checkpoint(tmp_path / "fed", every_seconds=0.0)
    with pytest.raises(Interrupt):
        fed.train(MODEL, clients, x_test, y_test, jax.random.key(2), config,
                  attack=stop_in_round_two, checkpoint=ckpt)
    ckpt = fed.federation_checkpoint(tmp_path / "fed", every_seconds=1e9)  # restore only
    resumed = fed.train(MODEL, clients, x_test, y_test, jax.random.key(2), config,
                        checkpoint=ckpt)
    assert ckpt.restored_step == 1 and resumed.history["round"] == [1, 2, 3]
    assert _max_diff(resumed.params, whole.params) == 0.0
    np.testing.assert_allclose(resumed.history["test_loss"], whole.history["test_loss"])


def test_participants_are_a_seeded_fraction_and_augmentation_crops_and_flips():
    cfg = fed.FederationConfig(participation=0.3)
    a = fed.sample_participants(jax.random.key(0), 10, cfg)
    assert len(a) == 3 and list(a) == sorted(set(a.tolist()))
    np.testing.assert_array_equal(a, fed.sample_participants(jax.random.key(0), 10, cfg))
    assert len(fed.sample_participants(jax.random.key(0), 10, fed.FederationConfig())) == 10
    x = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1) + 1
    out = jax.jit(fed.random_crop_flip, static_argnums=2)(jax.random.key(1), x, 2)
    assert out.shape == x.shape
    for img, src in zip(np.asarray(out), np.asarray(x), strict=True):
        values = img[img > 0]  # every non-padding pixel comes from the source image
        assert np.isin(values, src).all() and len(values) >= 6 * 6


def test_config_errors_say_what_would_be_right():
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        fed.FederationConfig(participation=0.0)
    with pytest.raises(ValueError, match="weight_delta"):
        fed.FederationConfig(local=fl.ONE_STEP)
    clients, x_test, y_test = _clients()
    with pytest.raises(ValueError, match=r"0\.\.1"):
        fed.train(MODEL, clients, x_test, y_test, jax.random.key(0),
                  fed.FederationConfig(rounds=1, local=LOCAL, attack_clients=(2,)))


def test_clients_of_one_size_train_the_same_under_vmap_and_one_at_a_time():
    clients, _, _ = _clients()
    same = fed.Clients(x_train=(clients.x_train[0], clients.x_train[1][:16]),
                       y_train=(clients.y_train[0], clients.y_train[1][:16]),
                       x_test=clients.x_test, y_test=clients.y_test)
    params = MODEL.init(jax.random.key(0), SHAPE)
    out = [fed.run_round(MODEL, NO_DEFENSE, fed.FederationConfig(local=LOCAL, client_batch=b),
                         same, params, 0, jax.random.key(3))[0] for b in (None, 1)]
    assert _max_diff(out[0], out[1]) < 1e-5  # measured 0.0 (vmap of 2 vs lax.map)
