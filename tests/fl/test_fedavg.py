import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgi import defenses, fl, models
from jgi.checkpointing import PeriodicCheckpoint, fedavg_checkpoint, fedavg_position
from jgi.fl import fedavg

SHAPE = (12, 12, 1)


def _data(num_clients=3, n_train=32, n_val=8, seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    return fedavg.ClientData(
        x_train=jax.random.normal(k[0], (num_clients, n_train, *SHAPE)),
        y_train=jax.random.randint(k[1], (num_clients, n_train), 0, 10),
        x_val=jax.random.normal(k[2], (num_clients, n_val, *SHAPE)),
        y_val=jax.random.randint(k[3], (num_clients, n_val), 0, 10))


def _test_set():
    return jax.random.normal(jax.random.key(9), (20, *SHAPE)), jnp.arange(20) % 10


def test_one_round_of_full_batch_sgd_equals_centralized_gradient_descent_on_the_union():
    model = models.get("cnn", channels=(4, 8), padding="SAME")
    data = _data()
    cfg = fedavg.FedAvgConfig(rounds=1, batch_size=32, optimizer_name="sgd", lr=0.1,
                              patience=5)
    result = fedavg.train(model, defenses.NO_DEFENSE, data, *_test_set(), jax.random.key(1),
                          cfg, progress=False)
    # Centralised: one gradient step on all 96 examples, from the same initialisation.
    params = model.init(jax.random.split(jax.random.key(1))[0], SHAPE)
    x = data.x_train.reshape(-1, *SHAPE)
    y = data.y_train.reshape(-1)
    grad = jax.grad(lambda p: fl.client_loss(model, p, x, y, {}))(params)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, grad)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 result.params, expected)


def test_early_stopping_triggers_after_patience_rounds_without_improvement():
    model = models.get("cnn", channels=(4, 8))
    cfg = fedavg.FedAvgConfig(rounds=50, batch_size=16, lr=0.0, patience=3)  # nothing moves
    result = fedavg.train(model, defenses.NO_DEFENSE, _data(), *_test_set(), jax.random.key(0),
                          cfg, progress=False)
    assert result.stopped_early and result.rounds == 4 and result.best_round == 1
    assert len(result.history["val_loss"]) == 4
    assert len(set(np.round(result.history["val_loss"], 6))) == 1


def test_defenses_are_applied_in_training_and_training_learns():
    stack = defenses.from_names("dropout,dp,prune,cvb")
    model = models.get("cnn", channels=(8, 16), **stack.model_options())
    data = _data(n_train=32)
    cfg = fedavg.FedAvgConfig(rounds=3, batch_size=16, lr=1e-2, patience=10)
    result = fedavg.train(model, stack, data, data.x_train[0], data.y_train[0],
                          jax.random.key(0), cfg, progress=False)
    losses = result.history["train_loss"]
    assert result.rounds == 3 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]  # it learns (here: memorises its random labels)
    local = fl.make_local_training(model, stack, cfg.local_training(), SHAPE, 32)
    params = model.init(jax.random.key(0), SHAPE)
    tx = cfg.optimizer()
    out1 = jax.jit(local)(params, tx.init(params), data.x_train[0], data.y_train[0],
                          jax.random.key(3))
    out2 = jax.jit(local)(params, tx.init(params), data.x_train[0], data.y_train[0],
                          jax.random.key(3))
    jax.tree.map(np.testing.assert_array_equal, out1[0], out2[0])  # same key, same result


def test_interrupted_training_resumes_to_the_same_history(tmp_path):
    model = models.get("cnn", channels=(4, 8))
    cfg = fedavg.FedAvgConfig(rounds=4, batch_size=16, patience=10)
    args = (model, defenses.NO_DEFENSE, _data(), *_test_set(), jax.random.key(0), cfg)
    full = fedavg.train(*args, progress=False)

    class Stop(PeriodicCheckpoint):
        def due(self):
            return True

        def save(self, state):
            super().save(state)
            if int(state["state"].round) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fedavg.train(*args, progress=False,
                     checkpoint=Stop(tmp_path / "ck", step_of=fedavg_checkpoint("x").step_of))
    ckpt = fedavg_checkpoint(tmp_path / "ck")
    resumed = fedavg.train(*args, progress=False, checkpoint=ckpt)
    assert fedavg_position(ckpt.restored_step) == "after round 2"
    assert resumed.history == full.history
    jax.tree.map(np.testing.assert_array_equal, resumed.params, full.params)


def test_a_round_interrupted_between_pieces_resumes_where_it_stopped(tmp_path):
    # 2 epochs x 2 batches = 4 local steps per round, one piece each: the interrupt after
    # piece 3 of round 2 keeps those pieces; the rerun does only the last one of round 2.
    model = models.get("cnn", channels=(4, 8))
    cfg = fedavg.FedAvgConfig(rounds=2, local_epochs=2, batch_size=16, patience=10)
    args = (model, defenses.NO_DEFENSE, _data(), *_test_set(), jax.random.key(0), cfg)
    full = fedavg.train(*args, progress=False)
    done = []

    def stop_in_round_2(round_index, pieces):
        done.append((round_index, pieces))
        if (round_index, pieces) == (1, 3):
            raise KeyboardInterrupt

    ckpt = fedavg_checkpoint(tmp_path / "ck", every_seconds=1e9)  # saved by the interrupt
    with pytest.raises(KeyboardInterrupt):
        fedavg.train(*args, progress=False, checkpoint=ckpt, piece_steps=1,
                     on_piece=stop_in_round_2)
    assert done == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3)]
    ckpt = fedavg_checkpoint(tmp_path / "ck")
    rest = []
    resumed = fedavg.train(*args, progress=False, checkpoint=ckpt, piece_steps=1,
                           on_piece=lambda r, p: rest.append((r, p)))
    assert fedavg_position(ckpt.restored_step) == ("in round 2, after 3 piece(s) of its "
                                                   "local training")
    assert rest == [(1, 4)]
    # Pieces of 1 step and of the default 8 steps (the whole round here): same run.
    np.testing.assert_allclose(resumed.history["train_loss"], full.history["train_loss"],
                               rtol=1e-6)
    assert resumed.history["test_accuracy"] == full.history["test_accuracy"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 resumed.params, full.params)


def test_a_round_in_pieces_equals_the_round_in_one_call():
    model = models.get("cnn", channels=(4, 8))
    cfg = fedavg.FedAvgConfig(local_epochs=2, batch_size=16)
    data = _data()
    params = model.init(jax.random.key(0), SHAPE)
    opt_state = fedavg.client_opt_states(cfg, params, 3)
    whole, _, loss = jax.jit(fedavg.make_round(model, defenses.NO_DEFENSE, cfg, SHAPE, 32, 3))(
        params, opt_state, data.x_train, data.y_train, jax.random.key(1))
    pieces = fl.local.local_pieces(cfg.local_training(), 32, 3)
    assert [(p.epoch, p.start, p.length) for p in pieces] == [(0, 0, 2), (1, 0, 2)]
    run_piece = fedavg.make_pieces(model, defenses.NO_DEFENSE, cfg, SHAPE, 32, 3, pieces)
    clients, sums = fedavg._stacked(params, 3), 0.0
    for index in range(len(pieces)):
        clients, opt_state, piece_loss = run_piece(index, clients, opt_state, data.x_train,
                                                   data.y_train, jax.random.key(1))
        sums += piece_loss
    averaged = jax.tree.map(lambda p: p.mean(0), clients)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 averaged, whole)
    np.testing.assert_allclose(float(sums.mean() / 4), float(loss), rtol=1e-6)


def test_inference_noise_is_deterministic_identity():
    model = models.get("cnn", dropout=0.25, bottleneck="cvb")
    noise = fedavg.inference_noise(model, (28, 28, 1), 2)
    assert float(noise["dropout"]["conv0"].min()) == 0.75 and float(noise["eps"].max()) == 0.0


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="persist, reset"):
        fedavg.FedAvgConfig(adam_state="keep")
    with pytest.raises(ValueError, match="adam, sgd"):
        fedavg.FedAvgConfig(optimizer_name="lbfgs")
    with pytest.raises(ValueError, match="fewer than one batch"):
        fl.make_local_training(models.get("cnn"), defenses.NO_DEFENSE,
                               fedavg.FedAvgConfig(batch_size=64).local_training(), (28, 28, 1),
                               10)
    with pytest.raises(ValueError, match="client_batch must be >= 1"):
        fedavg.FedAvgConfig(client_batch=0)


def test_clients_trained_a_few_at_a_time_give_the_vmapped_round():
    # DP's per-example gradients make "all clients at once" memory-hungry; lax.map over
    # client batches (2 + 1 clients here) must give the same round.
    stack = defenses.from_names("dp,prune")
    model = models.get("cnn", channels=(4, 8))
    data = _data()
    params = model.init(jax.random.key(0), SHAPE)
    outs = []
    for client_batch in (None, 2):
        cfg = fedavg.FedAvgConfig(batch_size=16, client_batch=client_batch)
        opt_state = fedavg.client_opt_states(cfg, params, 3)
        round_fn = jax.jit(fedavg.make_round(model, stack, cfg, SHAPE, 32, 3))
        outs.append(round_fn(params, opt_state, data.x_train, data.y_train,
                             jax.random.key(1)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 outs[0], outs[1])


def test_evaluation_compiles_once_per_model_and_matches_a_direct_computation():
    model = models.get("cnn")
    params = model.init(jax.random.key(0), (8, 8, 1))
    x = jax.random.normal(jax.random.key(1), (7, 8, 8, 1))
    y = jax.random.randint(jax.random.key(2), (7,), 0, 10)
    assert fedavg._batch_metrics(model) is fedavg._batch_metrics(model)  # no per-round jit
    loss, acc = fedavg.evaluate(model, params, x, y, batch_size=3)  # batches 3, 3, 1
    logits = model.apply(params, x, {})
    want_loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert acc == pytest.approx(float(jnp.mean(jnp.argmax(logits, -1) == y)))
