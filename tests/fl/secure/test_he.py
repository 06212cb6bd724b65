"""Homomorphic aggregation: CKKS and Paillier sums (skipped where the library is missing)."""

import numpy as np
import pytest

from jgi.fl.secure import Dropouts, ProtocolError, SecureAggregation, he, secure_sum

X = np.random.default_rng(0).normal(0, 1, (3, 4100))  # two CKKS ciphertexts per client


@pytest.mark.skipif(not he.available("ckks"), reason="tenseal is not installed")
def test_ckks_sum_is_within_1e_6_relative_and_the_server_holds_no_secret_key():
    cfg = SecureAggregation("ckks")
    keys = he.make_keys(cfg.protocol_config(3, X.shape[1]))
    assert not keys.public.has_secret_key() and keys.secret.has_secret_key()
    out = secure_sum(X, cfg, Dropouts.at("encrypted_input", [1]), keys=keys)
    expected = X[[0, 2]].sum(0)
    rel = np.linalg.norm(out.total - expected) / np.linalg.norm(expected)
    assert out.contributors == (0, 2) and rel < 1e-6  # measured 1.3e-9
    y = out.run.costs.client_bytes_sent  # two ciphertexts of ~330 kB each
    assert y[0] > 2 * 300_000 and y[1] == 0


@pytest.mark.skipif(not he.available("paillier"), reason="phe is not installed")
def test_paillier_sum_is_exact_after_quantisation_and_refuses_a_wrong_count():
    x = X[:, :40]
    cfg = SecureAggregation("paillier", paillier_bits=512)  # 15 slots: 3 ciphertexts each
    keys = he.make_keys(cfg.protocol_config(3, 40))
    q = cfg.quantization
    out = secure_sum(x, cfg, keys=keys)
    exact = q.decode_sum(np.sum([q.encode(v) for v in x], 0), 3)
    np.testing.assert_array_equal(out.total, exact)
    assert np.abs(out.total - x.sum(0)).max() <= q.error_bound(3)

    def drop_one(m):
        if m.stage == "encrypted_input" and m.sender == 2:
            return type(m)(m.run_id, m.stage, m.sender, m.recipient, {"ct": m.payload["ct"][:-1]})
        return m
    with pytest.raises(ProtocolError, match="client 2 sent 2 ciphertexts, expected 3"):
        secure_sum(x, cfg, keys=keys, tamper=drop_one)


def test_a_missing_backend_says_what_to_install(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_tenseal(name, *a, **k):
        if name == "tenseal":
            raise ImportError("No module named 'tenseal'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_tenseal)
    with pytest.raises(he.MissingBackend, match="pip install tenseal"):
        he.make_keys(he.HEConfig("ckks", 2, 8))


@pytest.mark.skipif(not he.available("ckks"), reason="tenseal is not installed")
def test_ckks_run_ends_without_a_sum_when_the_key_holder_drops():
    cfg = SecureAggregation("ckks")
    keys = he.make_keys(cfg.protocol_config(3, 8))
    with pytest.raises(ProtocolError, match="key holder .client 0. dropped"):
        secure_sum(X[:, :8], cfg, Dropouts.at("decrypt", [0]), keys=keys)
