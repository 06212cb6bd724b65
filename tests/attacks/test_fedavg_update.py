"""DLG and iDLG in jgi.attacks.fedavg_update (the FedAvg-attack grid's dispatch): the
names it accepts and the update they match. Their reconstruction through the grid is
tests/experiments/test_fedavg_attacks.py; DLG's and iDLG's working regime is
tests/attacks/test_dlg.py."""

import jax.numpy as jnp
import numpy as np
import pytest

from jgi import fl
from jgi.attacks import fedavg_update


def _observation(kind: str) -> fl.Observation:
    # 2 epochs of ceil(5 / 2) = 3 steps: 6 local steps at lr 0.1 * 0.5 (round 1).
    local = (fl.ONE_STEP if kind == "gradient" else
             fl.LocalTraining(epochs=2, batch_size=2, lr=0.1, lr_decay=0.5))
    update = {"dense": {"w": jnp.full((2, 3), 0.3), "b": jnp.ones(3)}}
    return fl.Observation(update=update, params=update, local=local, num_samples=5, round=1)


def test_mean_gradient_scale_divides_by_the_rounds_lr_times_the_local_steps():
    obs = _observation("weight_delta")
    assert fedavg_update.dlg_target(obs, "raw") is obs.update
    scaled = fedavg_update.dlg_target(obs, "mean-gradient")
    np.testing.assert_allclose(scaled["dense"]["b"], 1 / (0.05 * 6), rtol=1e-6)
    np.testing.assert_allclose(scaled["dense"]["w"], 0.3 / (0.05 * 6), rtol=1e-6)
    gradient = _observation("gradient")  # already a gradient: nothing to undo
    assert fedavg_update.dlg_target(gradient, "mean-gradient") is gradient.update
    with pytest.raises(ValueError, match="dlg_scale must be one of raw, mean-gradient"):
        fedavg_update.UpdateAttackConfig(dlg_scale="lr")


def test_unknown_attack_names_the_valid_ones():
    assert fedavg_update.check_attacks(["dlg", "idlg", "dlf"]) == ("dlg", "idlg", "dlf")
    assert fedavg_update.ATTACKS == ("single-step", "study", "consistent",
                                     "consistent+order", "dlf")  # experiments.multistep's
    with pytest.raises(ValueError, match="unknown attack 'ig'; valid: single-step, .*, dlg, "
                                         "idlg"):
        fedavg_update.check_attacks(["ig"])
