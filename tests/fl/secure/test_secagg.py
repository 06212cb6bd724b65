"""SecAgg, SecAgg+ and LightSecAgg: exact sums, dropouts, refusals, what one message shows."""

import dataclasses

import numpy as np
import pytest

from jgi.fl.secure import (Dropouts, ProtocolError, SecureAggregation, lightsecagg, secagg,
                           secure_sum)
from jgi.fl.secure.protocol import Inbox, Message

N, D = 6, 64
RNG = np.random.default_rng(0)
X = RNG.integers(0, 2**22, (N, D), dtype=np.uint32)  # quantised inputs


def _plain(x, contributors, modulus):
    return x[list(contributors)].astype(np.int64).sum(0) % modulus


def _secagg(neighbours=None, threshold=4):
    return secagg.SecAggConfig(N, D, threshold=threshold, neighbours=neighbours, seed=1)


@pytest.mark.parametrize("neighbours", [None, 4], ids=["secagg", "secagg+"])
@pytest.mark.parametrize("dropouts", [
    Dropouts(),
    Dropouts.at("masked_input", [3]),  # 1 dropout after sharing keys: its pairwise masks
    Dropouts({"share_keys": frozenset({0}), "unmask": frozenset({5})}),  # threshold-many
], ids=["none", "one", "threshold"])
def test_secagg_sum_is_exact_in_the_ring_with_dropouts_up_to_the_threshold(neighbours, dropouts):
    # threshold 4 of 6 (secagg) / 3 of a neighbourhood of 5 (secagg+): 2 may drop.
    cfg = _secagg(neighbours, threshold=4 if neighbours is None else 3)
    run = secagg.run(X, cfg, dropouts)
    dropped_before_input = set(dropouts.before.get("share_keys", ())) | set(
        dropouts.before.get("masked_input", ()))
    assert set(run.contributors) == set(range(N)) - dropped_before_input
    np.testing.assert_array_equal(run.total, _plain(X, run.contributors, 2**32))


def test_secagg_refuses_to_unmask_with_fewer_survivors_than_the_threshold():
    with pytest.raises(ProtocolError, match="fewer than the threshold 4.*no partial sum"):
        secagg.run(X, _secagg(), Dropouts({"masked_input": frozenset({0, 1}),
                                           "unmask": frozenset({2})}))


@pytest.mark.parametrize("dropouts", [Dropouts(), Dropouts.at("share_masks", [2]),
                                      Dropouts.at("aggregate_mask", [0, 5])],
                         ids=["none", "one", "n-minus-target"])
def test_lightsecagg_sum_is_exact_in_the_field_with_dropouts_up_to_n_minus_u(dropouts):
    cfg = lightsecagg.LightSecAggConfig(N, D, privacy=2, target=4, seed=3)
    run = lightsecagg.run(X, cfg, dropouts)
    np.testing.assert_array_equal(run.total, _plain(X, run.contributors, lightsecagg.PRIME))


def test_lightsecagg_refuses_with_fewer_than_u_mask_shares():
    cfg = lightsecagg.LightSecAggConfig(N, D, privacy=2, target=4, seed=3)
    with pytest.raises(ProtocolError, match="fewer than the threshold 4.*no partial sum"):
        lightsecagg.run(X, cfg, Dropouts.at("aggregate_mask", [0, 1, 2]))


def test_secagg_secagg_plus_and_lightsecagg_give_the_same_decoded_sum():
    x = RNG.normal(0, 0.5, (N, D))
    drop = {"secagg": Dropouts.at("unmask", [1]), "secagg+": Dropouts.at("unmask", [1]),
            "lightsecagg": Dropouts.at("aggregate_mask", [1])}
    sums = {s: secure_sum(x, SecureAggregation(s, seed=0), drop[s]).total for s in drop}
    bound = SecureAggregation().quantization.error_bound(N)
    for s, total in sums.items():
        assert np.abs(total - x.sum(0)).max() <= bound, s
    np.testing.assert_allclose(sums["secagg"], sums["lightsecagg"], atol=1e-12)
    np.testing.assert_array_equal(sums["secagg"], sums["secagg+"])


def test_one_masked_input_is_uniform_whatever_the_input():
    d = 1 << 14
    zeros, ones = np.zeros((3, d), np.uint32), np.full((3, d), 2**22, np.uint32)
    for x in (zeros, ones):
        seen = []
        secagg.run(x, secagg.SecAggConfig(3, d, threshold=2, seed=5), None,
                   lambda m: (seen.append(m) if m.stage == "masked_input" and
                              m.recipient == -1 else None) or m)
        y = seen[0].payload["y"]
        counts = np.bincount(y >> 28, minlength=16)  # 1024 expected per bin
        chi2 = float(((counts - d / 16) ** 2 / (d / 16)).sum())
        assert chi2 < 37.7  # 99.9 % quantile, 15 degrees of freedom
        assert abs(float(np.mean(y / 2**32)) - 0.5) < 0.01  # sd of the mean: 0.0023


def _flip_share(stage):
    def tamper(m):
        if m.stage == stage and m.recipient == 2 and m.payload.get("shares"):
            shares = dict(m.payload["shares"])
            j = min(shares)
            shares[j] = shares[j][:20] + bytes([shares[j][20] ^ 1]) + shares[j][21:]
            return dataclasses.replace(m, payload={**m.payload, "shares": shares})
        return m
    return tamper


def test_shares_tampered_in_transit_are_rejected_by_aes_gcm():
    with pytest.raises(ProtocolError, match="to client 2 failed AES-GCM authentication"):
        secagg.run(X, _secagg(), None, _flip_share("masked_input"))
    cfg = lightsecagg.LightSecAggConfig(N, D, privacy=2, target=4, seed=3)
    with pytest.raises(ProtocolError, match="to client 2 failed AES-GCM authentication"):
        lightsecagg.run(X, cfg, None, _flip_share("masked_input"))


def test_wrong_length_replayed_and_foreign_messages_are_refused():
    def short(m):
        if m.stage == "masked_input" and m.sender == 1:
            return dataclasses.replace(m, payload={"y": m.payload["y"][:-1]})
        return m
    with pytest.raises(ProtocolError, match="client 1 sent y of length 63, expected 64"):
        secagg.run(X, _secagg(), None, short)
    inbox = Inbox(run_id=7, stage="masked_input", expected_senders=range(N))
    msg = Message(7, "masked_input", 1, -1, {"y": X[1]})
    inbox.accept(msg)
    with pytest.raises(ProtocolError, match="second message from client 1 .replayed"):
        inbox.accept(msg)
    with pytest.raises(ProtocolError, match="belongs to run 6"):
        inbox.accept(dataclasses.replace(msg, run_id=6, sender=2))
    with pytest.raises(ProtocolError, match="is for stage 'unmask'"):
        inbox.accept(dataclasses.replace(msg, stage="unmask", sender=2))


def test_configs_say_what_is_wrong():
    with pytest.raises(ValueError, match="threshold must be in \\[2, 6\\]"):
        secagg.SecAggConfig(6, 8, threshold=7)
    with pytest.raises(ValueError, match="even k"):
        secagg.SecAggConfig(6, 8, threshold=2, neighbours=3)
    with pytest.raises(ValueError, match="privacy T < target U"):
        lightsecagg.LightSecAggConfig(6, 8, privacy=4, target=4)
    with pytest.raises(ValueError, match="scheme must be one of"):
        SecureAggregation("secagg++")


def test_secagg_plus_graph_is_k_regular_and_symmetric():
    from jgi.fl.secure.primitives import RandomSource
    graph = secagg.harary_graph(11, 4, RandomSource(0))
    assert all(len(nb) == 4 and i not in nb for i, nb in enumerate(graph))
    assert all(i in graph[j] for i, nb in enumerate(graph) for j in nb)


def test_a_malformed_mask_key_share_is_caught_before_any_sum_is_released():
    def corrupt(m):  # client 1 returns a wrong (but well-formed) share of dropped client 0
        if m.stage == "unmask" and m.sender == 1 and m.payload["s_shares"]:
            s = {j: bytes(66 - 1) + b"\x07" for j in m.payload["s_shares"]}
            return dataclasses.replace(m, payload={**m.payload, "s_shares": s})
        return m
    cfg = _secagg(threshold=5)  # every survivor's share is needed
    with pytest.raises(ProtocolError, match="inconsistent|do not reconstruct its advertised"):
        secagg.run(X, cfg, Dropouts.at("masked_input", [0]), corrupt)
