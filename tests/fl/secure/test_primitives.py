"""Shamir sharing, AES-GCM, the PRG and the quantisation the protocols are built on."""

import numpy as np
import pytest

from jgi.fl.secure import primitives as P
from jgi.fl.secure.quantize import Quantization


def test_shamir_reconstructs_from_any_threshold_shares_and_refuses_fewer():
    rand = P.RandomSource(0)
    secret = rand.bytes(32)
    shares = P.shamir_share(secret, [1, 2, 3, 4, 5], threshold=3, rand=rand)
    for pick in ([1, 2, 3], [5, 3, 1], [2, 4, 5, 1]):
        assert P.shamir_reconstruct({x: shares[x - 1] for x in pick}, 3, 32) == secret
    with pytest.raises(P.ProtocolError, match="fewer than the threshold 3"):
        P.shamir_reconstruct({1: shares[0], 2: shares[1]}, 3, 32)


def test_aes_gcm_refuses_a_flipped_bit_and_other_associated_data():
    rand = P.RandomSource(1)
    key = rand.bytes(32)
    sealed = P.seal(key, b"share", b"run 0|0->1", rand)
    assert P.open_sealed(key, sealed, b"run 0|0->1", "share") == b"share"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(P.ProtocolError, match="failed AES-GCM authentication"):
        P.open_sealed(key, tampered, b"run 0|0->1", "share")
    with pytest.raises(P.ProtocolError, match="replayed"):
        P.open_sealed(key, sealed, b"run 1|0->1", "share")  # same bytes, another run


def test_x25519_agreement_is_symmetric_and_labels_separate_keys():
    rand = P.RandomSource(2)
    a, pa = P.key_pair(rand)
    b, pb = P.key_pair(rand)
    assert P.agree(a, pb, b"x") == P.agree(b, pa, b"x") != P.agree(a, pb, b"y")
    with pytest.raises(P.ProtocolError, match="malformed X25519"):
        P.agree(a, pb[:31], b"x")


def test_prg_words_are_uniform_mod_2_32():
    words = P.prg_uint32(bytes(32), 1 << 16)
    counts = np.bincount(words >> 28, minlength=16)  # top 4 bits: 16 bins of 4096 expected
    chi2 = float(((counts - 4096) ** 2 / 4096).sum())
    assert chi2 < 37.7  # 99.9 % quantile of chi-square with 15 degrees of freedom


def test_quantisation_sum_is_within_its_bound_and_refuses_wraparound():
    q = Quantization()
    x = np.random.default_rng(0).uniform(-8, 8, (5, 1000))
    total = np.sum([q.encode(v) for v in x], axis=0, dtype=np.uint32)  # wraps mod 2^32
    err = np.abs(q.decode_sum(total, 5) - x.sum(0)).max()
    assert err <= q.error_bound(5) and q.error_bound(5) < 1e-5
    with pytest.raises(ValueError, match="wrap around"):
        q.decode_sum(total, q.max_clients() + 1)
