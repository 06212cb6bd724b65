"""jgi.integrations.flower: parameters <-> Flower ndarrays, records -> Observation, and a
real local Flower federation whose captured update jgi's attacks invert.

The conversion and observation tests need no Flower; the federation test starts Flower's
gRPC server and a client process on 127.0.0.1 and is skipped where flwr is not
installed (the optional extra ``flower``).
"""

import dataclasses
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import data, fl, metrics, models
from jgi.attacks import cdia, ig, mimic, runner
from jgi.fl.local import LocalTraining
from jgi.integrations import flower as fw

HAVE_FLWR = importlib.util.find_spec("flwr") is not None
needs_flwr = pytest.mark.skipif(
    not HAVE_FLWR, reason="flwr is not installed (optional extra: pip install 'jgi[flower]')")

SHAPE = (28, 28, 1)
ONE_SGD_STEP = LocalTraining(epochs=1, batch_size=None, lr=0.1)


def _mlp(width=8):
    model = models.get("mlp", width=width)
    return model, model.init(jax.random.key(0), SHAPE)


def test_ndarrays_round_trip_keeps_every_leaf_in_order():
    _, params = _mlp()
    arrays = fw.to_ndarrays(params)
    assert fw.leaf_names(params) == ["['dense']['b']", "['dense']['w']", "['hidden']['b']",
                                     "['hidden']['w']"]
    back = fw.from_ndarrays(arrays, params)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_from_ndarrays_names_the_leaf_and_both_shapes():
    _, params = _mlp()
    arrays = fw.to_ndarrays(params)
    with pytest.raises(ValueError, match=r"got 3 arrays, the model has 4"):
        fw.from_ndarrays(arrays[:3], params)
    bad = list(arrays)
    bad[3] = np.zeros((784, 9), np.float32)
    with pytest.raises(ValueError, match=r"\['hidden'\]\['w'\] has shape \(784, 9\), the model "
                                         r"expects \(784, 8\)"):
        fw.from_ndarrays(bad, params)
    bad[3] = arrays[3].astype(np.float64)
    with pytest.raises(ValueError, match=r"dtype float64, the model expects float32"):
        fw.from_ndarrays(bad, params)


def test_spec_and_local_training_survive_json():
    local = LocalTraining(epochs=2, batch_size=4, optimizer="adam", lr=1e-3, betas=(0.8, 0.9))
    assert fw.local_from_json(fw.local_to_json(local)) == local
    spec = fw.FederationSpec(model="mlp", model_options=(("width", 8),), defenses="dp,prune",
                             local=local, rounds=2)
    assert fw.FederationSpec.from_json(spec.to_json()) == spec
    assert spec.stack().names == ["dp", "prune"]
    with pytest.raises(ValueError, match="unknown model 'mpl'"):
        fw.FederationSpec(model="mpl")
    with pytest.raises(ValueError, match="Unknown defense"):
        fw.FederationSpec(defenses="dropuot")


def _record(params, new_params, n, local, round_=1):
    """A ClientRecord as the server holds it: the client sent ``new_params``."""
    return fw.ClientRecord(round=round_, cid="c", partition=0, num_examples=n,
                           params=tuple(fw.to_ndarrays(new_params)),
                           global_params=tuple(fw.to_ndarrays(params)),
                           config={fw.LOCAL_CONFIG: fw.local_to_json(local)})


def test_observation_of_a_record_and_its_gradient(mnist_sample):
    model, params = _mlp()
    x = jnp.asarray(data.normalize(mnist_sample.x_train[:1], mnist_sample.info))
    y = jnp.asarray(mnist_sample.y_train[:1])
    local = dataclasses.replace(ONE_SGD_STEP, lr_decay=0.5)
    true = jax.jit(lambda p: fl.client_update(model, p, x, y))(params)  # 6x less than eager
    lr = local.learning_rate(1)  # Flower round 2 is jgi round 1: lr 0.05
    sent = jax.tree.map(lambda p, g: p - lr * g, params, true)
    record = _record(params, sent, 1, local, round_=2)
    obs = fw.observation(record, params)
    assert (obs.local, obs.num_samples, obs.round, obs.kind) == (local, 1, 1, "weight_delta")
    grad = fw.observation(record, params, gradient=True)
    assert grad.kind == "gradient"
    # W - (W - lr g) in float32, divided by lr: the gradient to 1e-4 of its largest
    # entry (measured: 2e-6).
    for a, b in zip(jax.tree.leaves(grad.update), jax.tree.leaves(true), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    grad.require_single_gradient("IG")  # what the targeted attacks check


def test_as_gradient_refuses_what_is_not_one_sgd_step():
    _, params = _mlp()
    for local in (LocalTraining(epochs=1, batch_size=2, lr=0.1),
                  LocalTraining(epochs=1, batch_size=None, optimizer="adam", lr=0.1),
                  LocalTraining(epochs=1, batch_size=None, weight_decay=1e-4, lr=0.1)):
        record = _record(params, params, 4, local)
        with pytest.raises(ValueError, match="jgi.attacks.multistep"):
            fw.observation(record, params, gradient=True)
    record = dataclasses.replace(record, config={})
    with pytest.raises(ValueError, match="pass local="):
        fw.observation(record, params)


def test_the_flower_parts_say_what_to_install_without_flwr(monkeypatch):
    monkeypatch.setattr(fw, "flwr", None)
    with pytest.raises(ImportError, match=r"pip install 'jgi\[flower\]'"):
        fw.require_flwr()


@needs_flwr
def test_attack_on_a_real_flower_federation_matches_jgi_own_update(mnist_sample, tmp_path):
    """4 Flower clients (one process, one gRPC connection each), 3 rounds, one MNIST image
    each, one SGD step per round with dropout, DP-SGD and pruning: the server's record of
    client 2 in round 3 is jgi's own update for the same image, parameters and key, and
    CDIA inverts both alike."""
    info = mnist_sample.info
    x01 = mnist_sample.x_train[:4]
    x = np.asarray(data.normalize(x01, info))
    y = mnist_sample.y_train[:4]
    spec = fw.FederationSpec(model="mlp", model_options=(("width", 16),),
                             defenses="dropout,dp,prune", local=ONE_SGD_STEP, num_clients=4,
                             rounds=3, seed=3, round_timeout=60, connect_timeout=60)
    model, stack = spec.build_model(), spec.stack()
    params = model.init(jax.random.key(0), SHAPE)
    result = fw.run_federation(spec, [(x[i:i + 1], y[i:i + 1]) for i in range(4)], params,
                               tmp_path / "federation", client_processes=1, timeout=120)

    assert sorted((r.round, r.partition) for r in result.records) == [
        (r, c) for r in (1, 2, 3) for c in range(4)]
    assert all(r.num_examples == 1 for r in result.records)
    assert len({r.cid for r in result.records}) == 4  # four gRPC clients
    # The global parameters of rounds 2 and 3 are FedAvg's means of the previous round's.
    for r in (1, 2):
        sent = [q for q in result.records if q.round == r]
        nxt = next(q for q in result.records if q.round == r + 1).global_params
        for i, g in enumerate(nxt):
            np.testing.assert_allclose(np.mean([q.params[i] for q in sent], axis=0), g,
                                       atol=1e-6)

    record = result.record(round=3, partition=2)
    captured = fw.observation(record, params)
    own = jax.jit(lambda p: fl.observe(  # one compilation instead of eager dispatch
        model, p, jnp.asarray(x[2:3]), jnp.asarray(y[2:3]),
        fw.client_key(spec.seed, 2, record.round_index), stack, captured.local,
        round_index=record.round_index))(captured.params)
    # The same XLA program on the same inputs and key (dropout masks, DP noise) in another
    # process: measured bit-identical (max difference 0.0); 1e-6 leaves room for another
    # CPU's kernels.
    for a, b in zip(jax.tree.leaves(captured.update), jax.tree.leaves(own.update),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # CDIA (dropout masks estimated, the pruning mask read off the update, DP ignored) on
    # both updates from the same three starts: victims (captured, own) x (start 0, 1, 2),
    # one vmapped run.
    starts = jax.random.key_data(jax.random.split(jax.random.key(5), 3))
    pair = [fw.as_gradient(captured), fw.as_gradient(own)]
    victims = {"target": jax.tree.map(lambda a, b: jnp.stack([a] * 3 + [b] * 3),
                                      pair[0].update, pair[1].update),
               "label": jnp.full((6,), y[2], jnp.int32),
               "init_key": jnp.concatenate([starts, starts])}
    config = ig.IGConfig(max_iters=300, lr=1.0, tv_weight=1e-4)
    problem = fw.same_start(mimic.problem(model, stack, cdia.knowledge_for(stack), SHAPE,
                                          captured.params, config))
    attack = runner.run(problem, victims, {"params": captured.params,
                                           "bounds": data.input_bounds(info)},
                        jax.random.key(6), config.stopping(), progress=False)
    recon = np.clip(np.asarray(data.denormalize(attack.best["x"], info)), 0, 1)
    ssim = metrics.ssim(np.stack([x01[2]] * 6), recon)
    flower_ssim, own_ssim = ssim[:3], ssim[3:]
    # Measured (300 iterations, round 3, client 2): SSIM 0.981, 0.958, 0.966 from the
    # three starts, identical for both updates (they are bit-identical).
    np.testing.assert_allclose(flower_ssim, own_ssim, atol=1e-3)
    assert flower_ssim.min() > 0.85


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = next(line for line in (proc / "status").read_text().splitlines()
                         if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if text in cmdline and "zombie" not in state:
            pids.append(int(proc.name))
    return pids


@needs_flwr
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_a_federation_past_its_timeout_is_stopped_with_every_process(tmp_path):
    spec = fw.FederationSpec(model="mlp", model_options=(("width", 4),), num_clients=2,
                             rounds=1)
    model = spec.build_model()
    params = model.init(jax.random.key(0), SHAPE)
    x = np.zeros((1, *SHAPE), np.float32)
    folder = tmp_path / "overrun"
    # 1 s is less than the processes take to import JAX and Flower (several seconds).
    with pytest.raises(TimeoutError, match="not finished after 1 s"):
        fw.run_federation(spec, [(x, np.zeros(1, np.int32))] * 2, params, folder,
                          client_processes=2, timeout=1.0)
    assert _processes_mentioning(str(folder)) == []


def test_the_experiment_refuses_contradictory_flags(capsys):
    from experiments import flower_federation as exp
    for argv, message in (
            (["--victim-client", "4"], "--victim-client must be in 0..3"),
            (["--victim-round", "0"], "--victim-round is Flower's 1-based round"),
            (["--samples", "4", "--attacks", "cdia"], "cdia inverts one image's"),
            (["--attacks", "dlg"], "unknown"),
            (["--defenses", "mixup"], "input encodings"),
            (["--width", "8"], "--width sets the hidden width of --model mlp only")):
        with pytest.raises(SystemExit):
            exp.parse_args(argv)
        assert message in capsys.readouterr().err
    args = exp.parse_args(["--defenses", "dropout,prune"])
    assert args.attack_list == ["ig", "cdia"] and args.victim_round == 3
    assert exp.parse_args(["--samples", "2", "--epochs", "2"]).attack_list == ["ig"]
