"""Each targeted attack beats the untargeted one where the core paper says it does.

Four real MNIST victims (embedded sample), a compressed schedule (at most 300 iterations,
plateau after 60; VBIA, which needs longer, 500 and 100). The thresholds sit below what
was measured on 2 CPU cores (numbers in the comments) and well above the untargeted
attack's results.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import data, defenses, fl, metrics, models
from jgi.attacks import ATTACKS, ig, mimic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_attack(mnist_sample):
    ds, info = mnist_sample, mnist_sample.info
    key = jax.random.key(0)
    split = fl.iid_split(jax.random.fold_in(key, 0), len(ds.y_train))
    idx = fl.sample_victims(jax.random.fold_in(key, 1), split, 4)
    x = jnp.asarray(data.normalize(ds.x_train[idx], info))
    y = jnp.asarray(ds.y_train[idx])
    short = ig.IGConfig(max_iters=300, plateau_patience=60, stop_patience=200)
    long = ig.IGConfig(max_iters=500, plateau_patience=100, stop_patience=300)

    def run(stack, attack, longer=False):
        cfg = long if longer else short
        model = models.get("cnn", **stack.model_options())
        params = model.init(jax.random.fold_in(key, 2), info.image_shape)
        r = fl.sample_victim_randomness(jax.random.fold_in(key, 4), model, params, stack,
                                        info.image_shape, 4)
        updates = jax.jit(lambda p: fl.victim_updates(model, p, x, y, r, stack))(params)
        result = mimic.reconstruct(model, params, updates, y, jax.random.fold_in(key, 3), stack,
                                   ATTACKS[attack](stack), cfg, input_shape=info.image_shape,
                                   bounds=data.input_bounds(info), progress=False,
                                   client_noise=r.model, client_dp_noise=r.dp)
        recon = np.clip(data.denormalize(result.best["x"], info), 0, 1)
        return metrics.ssim(ds.x_train[idx], recon)

    return run


def test_dia_beats_ig_against_dropout(run_attack):
    stack = defenses.from_names("dropout")
    ig_ssim, dia_ssim = run_attack(stack, "ig"), run_attack(stack, "dia")
    # Measured at 300 iterations: IG 0.314 mean (max 0.379); DIA 0.894 mean (min 0.841).
    assert ig_ssim.max() < 0.5 and dia_ssim.min() > 0.75, (ig_ssim, dia_ssim)


@pytest.mark.parametrize("rate,measured_gpia_min", [(0.9, 0.844), (0.99, 0.632)])
def test_gpia_beats_ig_against_pruning(run_attack, rate, measured_gpia_min):
    stack = defenses.from_names("prune", prune=rate)
    ig_ssim, gpia_ssim = run_attack(stack, "ig"), run_attack(stack, "gpia")
    # Measured at 300 iterations: p=0.9 IG 0.682, GPIA 0.919 (min 0.844); p=0.99 IG 0.287,
    # GPIA 0.764 (min 0.632).
    assert gpia_ssim.mean() > ig_ssim.mean() + 0.2, (ig_ssim, gpia_ssim)
    assert gpia_ssim.min() > measured_gpia_min - 0.1


def test_vbia_beats_pig_against_cvb(run_attack):
    stack = defenses.from_names("cvb")
    pig_ssim, vbia_ssim = run_attack(stack, "pig"), run_attack(stack, "vbia", longer=True)
    # At 300 iterations VBIA reached 0.586 mean with two of four above 0.6, so it keeps
    # 500. Measured: PIG (300) 0.352 mean (max 0.438); VBIA (500) 0.778 mean (min 0.734).
    # One victim's
    # VBIA run turns on float rounding: 0.44 when the process had compiled shared parts
    # earlier under other XLA options (others 0.80-0.87), so three of four must succeed.
    assert pig_ssim.max() < 0.5, pig_ssim
    assert (vbia_ssim > 0.6).sum() >= 3 and vbia_ssim.mean() > pig_ssim.mean() + 0.25, (
        pig_ssim, vbia_ssim)


def test_wiig_restores_and_dpia_does_not_under_dp(run_attack):
    stack = defenses.from_names("dp", dp=defenses.DPConfig(20.0, 1e-3))
    ig_ssim, wiig_ssim, dpia_ssim = (run_attack(stack, a) for a in ("ig", "wiig", "dpia"))
    # Measured at 300 iterations: IG 0.697, WIIG 0.895 (min 0.838), DPIA 0.000 (as in the
    # paper's Table 1, DPIA ends below IG).
    assert wiig_ssim.mean() > ig_ssim.mean() + 0.1, (ig_ssim, wiig_ssim)
    assert wiig_ssim.min() > 0.8
    assert dpia_ssim.max() < 0.3 < ig_ssim.mean()
