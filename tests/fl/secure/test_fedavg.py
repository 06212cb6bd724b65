"""FedAvg through secure aggregation equals plaintext FedAvg within the quantisation error."""

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from jgi import defenses, models
from jgi.fl import fedavg
from jgi.fl.secure import Dropouts, SecureAggregation
from jgi.fl.secure import fedavg as secure_fedavg

SHAPE, C = (4, 4, 1), 4


def test_a_secagg_fedavg_round_equals_the_plaintext_round_within_the_quantisation_bound():
    k = jax.random.split(jax.random.key(1), 4)
    data = fedavg.ClientData(jax.random.normal(k[0], (C, 8, *SHAPE)),
                             jax.random.randint(k[1], (C, 8), 0, 10),
                             jax.random.normal(k[2], (C, 4, *SHAPE)),
                             jax.random.randint(k[3], (C, 4), 0, 10))
    model = models.get("mlp", width=4)
    cfg = fedavg.FedAvgConfig(rounds=1, batch_size=8, optimizer_name="sgd", lr=0.5)
    key = jax.random.key(2)
    out = secure_fedavg.train(model, defenses.NO_DEFENSE, data, None, None, key, cfg,
                              SecureAggregation("secagg", seed=0), evaluate_every=0)
    # jgi.fl.fedavg's own round from the same initialisation and round key.
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, SHAPE)
    plain, _, _ = jax.jit(fedavg.make_round(model, defenses.NO_DEFENSE, cfg, SHAPE, 8, C))(
        params, fedavg.client_opt_states(cfg, params, C), data.x_train, data.y_train,
        jax.random.split(k_train)[1])
    err = np.abs(ravel_pytree(out.params)[0] - ravel_pytree(plain)[0]).max()
    assert 0 < err <= out.max_abs_error[0] + 1e-6  # bound 7.6e-6 (4 clients); measured 3e-6
    assert out.costs[0]["client_bytes_sent"] > 4 * ravel_pytree(params)[0].size


def test_a_dropped_client_leaves_the_weighted_average_of_the_others():
    from jgi.fl.secure import secure_sum
    deltas = np.random.default_rng(0).normal(0, 1e-2, (C, 50))
    out = secure_sum(deltas / C, SecureAggregation("secagg+", seed=0),
                     Dropouts.at("masked_input", [2]))
    assert out.contributors == (0, 1, 3)
    # secure_fedavg.train reweights by n / (contributors' n): here C / 3.
    np.testing.assert_allclose(out.total * C / 3, deltas[[0, 1, 3]].mean(0),
                               atol=out.error_bound * C / 3)
