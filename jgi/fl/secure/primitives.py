"""Cryptographic and arithmetic building blocks of the secure-aggregation protocols.

Everything here is host-side NumPy / Python integers on top of ``cryptography``
(X25519, HKDF-SHA256, AES-GCM, AES-CTR). A simulation, not audited cryptography: see
the caveats in :mod:`jgi.fl.secure`.

- Key agreement: X25519 (Bernstein 2006) followed by HKDF-SHA256 (RFC 5869) with an
  ``info`` label per use, so the channel key and the mask seed of one pair differ.
- Authenticated encryption: AES-256-GCM with a fresh random 96-bit nonce per message;
  the associated data binds the protocol run, the stage, the sender and the recipient,
  so a share replayed into another run, stage or pair fails authentication.
- PRG: AES-256-CTR keyed by the 32-byte seed, zero nonce, encrypting zeros (the
  keystream). Chosen over NumPy's PCG64 because PCG64 is not a cryptographic PRG (its
  state can be recovered from outputs), so masks from it would not hide the inputs;
  AES-CTR is what Bonawitz et al. (CCS 2017, section 6) suggest ("AES in counter
  mode") and runs at GB/s with AES-NI.
- Shamir secret sharing (Shamir 1979) over the Mersenne prime field
  ``2^521 - 1`` (holds a 32-byte secret); shares are evaluated at ``x = 1, 2, ...``.
- Lagrange (MDS) coding over ``F_p``, ``p = 2^31 - 1``, for LightSecAgg: products of
  two field elements are below ``2^62`` and fit in int64, so NumPy does the vector work.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SHAMIR_PRIME = 2**521 - 1
SHAMIR_SHARE_BYTES = 66  # ceil(521 / 8)
FIELD_PRIME = 2**31 - 1  # LightSecAgg's field
KEY_BYTES = 32
NONCE_BYTES = 12


class ProtocolError(RuntimeError):
    """A protocol run refused to continue; no partial sum is released."""


class RandomSource:
    """Bytes for keys, seeds and nonces: the OS's (default) or a seeded stream.

    A seeded source (AES-CTR keyed by SHA-256 of the seed and a label) makes a protocol
    run reproducible for tests and benchmarks; it is *not* secret and must not be used
    for anything real.
    """

    def __init__(self, seed: int | None = None, label: str = ""):
        self._stream = None
        if seed is not None:
            key = hashlib.sha256(f"jgi-secure|{seed}|{label}".encode()).digest()
            self._stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def bytes(self, n: int) -> bytes:
        if self._stream is None:
            return os.urandom(n)
        return self._stream.update(bytes(n))

    def below(self, bound: int) -> int:
        """A uniform integer in ``[0, bound)`` (rejection sampling)."""
        nbytes = (bound.bit_length() + 7) // 8 + 8
        while True:
            v = int.from_bytes(self.bytes(nbytes), "big")
            limit = (1 << (8 * nbytes)) - (1 << (8 * nbytes)) % bound
            if v < limit:
                return v % bound


# ----------------------------------------------------------------------------- keys
def key_pair(rand: RandomSource) -> tuple[x25519.X25519PrivateKey, bytes]:
    """A fresh X25519 key pair: (private key, 32-byte raw public key)."""
    sk = x25519.X25519PrivateKey.from_private_bytes(rand.bytes(KEY_BYTES))
    return sk, public_bytes(sk)


def public_bytes(sk: x25519.X25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)


def private_bytes(sk: x25519.X25519PrivateKey) -> bytes:
    return sk.private_bytes_raw()


def agree(sk: x25519.X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """X25519 shared secret of (own private, peer public), through HKDF-SHA256 -> 32 bytes.

    Raises:
      ProtocolError: the peer's public key is malformed.
    """
    try:
        peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
        shared = sk.exchange(peer)
    except ValueError as e:
        raise ProtocolError(f"malformed X25519 public key ({len(peer_public)} bytes): {e}") from e
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


# ------------------------------------------------------------------------ AES-GCM
def seal(key: bytes, plaintext: bytes, associated: bytes, rand: RandomSource) -> bytes:
    """AES-256-GCM: nonce || ciphertext || tag."""
    nonce = rand.bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes, what: str) -> bytes:
    """Decrypts :func:`seal`'s output.

    Raises:
      ProtocolError: authentication failed (``what`` names the message): the
        ciphertext, nonce or tag was changed, or it belongs to another run, stage or pair.
    """
    if len(sealed) < NONCE_BYTES + 16:
        raise ProtocolError(f"{what}: {len(sealed)} bytes is shorter than a nonce and a tag "
                            f"({NONCE_BYTES + 16}).")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag as e:
        raise ProtocolError(f"{what} failed AES-GCM authentication (tampered in transit, or "
                            "replayed from another run, stage or pair); refused.") from e


# ---------------------------------------------------------------------------- PRG
def prg_bytes(seed: bytes, nbytes: int) -> bytes:
    """AES-256-CTR keystream of ``seed`` (32 bytes), ``nbytes`` long."""
    if len(seed) != KEY_BYTES:
        raise ValueError(f"PRG seed must be {KEY_BYTES} bytes, got {len(seed)}.")
    return Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(nbytes))


def prg_uint32(seed: bytes, length: int) -> np.ndarray:
    """``length`` uniform uint32 words (a uniform element of ``(Z / 2^32)^length``)."""
    return np.frombuffer(prg_bytes(seed, 4 * length), dtype="<u4").astype(np.uint32)


def prg_field(seed: bytes, length: int, prime: int = FIELD_PRIME) -> np.ndarray:
    """``length`` elements of ``F_prime`` (int64): 64-bit words reduced mod ``prime``
    (statistical distance from uniform at most ``prime / 2^64``, 2^-33 per entry)."""
    words = np.frombuffer(prg_bytes(seed, 8 * length), dtype="<u8")
    return (words % np.uint64(prime)).astype(np.int64)


# ------------------------------------------------------------------------- Shamir
def shamir_share(secret: bytes, xs: list[int], threshold: int,
                 rand: RandomSource) -> list[bytes]:
    """Shares of ``secret`` (at most 65 bytes) at the points ``xs`` (distinct, > 0), any
    ``threshold`` of which reconstruct it; fewer reveal nothing."""
    s = int.from_bytes(secret, "big")
    if s >= SHAMIR_PRIME:
        raise ValueError(f"secret of {len(secret)} bytes does not fit the field 2^521 - 1.")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}] for {len(xs)} shares, got "
                         f"{threshold}.")
    coeffs = [s] + [rand.below(SHAMIR_PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % SHAMIR_PRIME
        shares.append(acc.to_bytes(SHAMIR_SHARE_BYTES, "big"))
    return shares


def shamir_reconstruct(points: dict[int, bytes], threshold: int, length: int) -> bytes:
    """The secret (``length`` bytes) from ``{x: share}`` with at least ``threshold`` points.

    Raises:
      ProtocolError: fewer than ``threshold`` shares, or a share outside the field.
    """
    if len(points) < threshold:
        raise ProtocolError(f"{len(points)} shares, fewer than the threshold {threshold}.")
    items = sorted(points.items())[:threshold]
    ys = []
    for x, share in items:
        if len(share) != SHAMIR_SHARE_BYTES:
            raise ProtocolError(f"malformed Shamir share from point {x}: {len(share)} bytes, "
                                f"expected {SHAMIR_SHARE_BYTES}.")
        y = int.from_bytes(share, "big")
        if y >= SHAMIR_PRIME:
            raise ProtocolError(f"malformed Shamir share from point {x}: outside the field.")
        ys.append(y)
    xs = [x for x, _ in items]
    secret = 0
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (-xj) % SHAMIR_PRIME
                den = den * (xi - xj) % SHAMIR_PRIME
        secret = (secret + yi * num * pow(den, -1, SHAMIR_PRIME)) % SHAMIR_PRIME
    if secret >= 1 << (8 * length):
        raise ProtocolError("Shamir reconstruction gave a value longer than the secret: the "
                            "shares are inconsistent (malformed or from different secrets).")
    return secret.to_bytes(length, "big")


# --------------------------------------------------------- Lagrange coding (F_p)
def lagrange_matrix(from_points: list[int], to_points: list[int],
                    prime: int = FIELD_PRIME) -> np.ndarray:
    """``M[j, k] = l_k(to_j)``: the Lagrange basis of ``from_points`` at ``to_points``.

    A polynomial of degree < len(from_points) with values ``v`` at ``from_points`` has
    values ``M @ v`` at ``to_points`` (mod ``prime``). Cached (read-only result): every
    client of a run encodes with the same matrix.
    """
    return _lagrange_matrix(tuple(from_points), tuple(to_points), prime)


@functools.lru_cache(maxsize=64)
def _lagrange_matrix(from_points: tuple[int, ...], to_points: tuple[int, ...],
                     prime: int) -> np.ndarray:
    m = np.zeros((len(to_points), len(from_points)), np.int64)
    for j, t in enumerate(to_points):
        for k, fk in enumerate(from_points):
            num, den = 1, 1
            for i, fi in enumerate(from_points):
                if i != k:
                    num = num * (t - fi) % prime
                    den = den * (fk - fi) % prime
            m[j, k] = num * pow(den, -1, prime) % prime
    m.flags.writeable = False
    return m


def matmul_mod(m: np.ndarray, v: np.ndarray, prime: int = FIELD_PRIME) -> np.ndarray:
    """``(m @ v) mod prime`` for int64 ``m`` (rows, k) and ``v`` (k, length), entries in
    ``[0, prime)`` with ``prime < 2^31``: products are below ``2^62``, so three of them
    and a reduced partial sum add up in uint64 without overflow; reduced every three."""
    if prime >= 2**31:
        raise ValueError(f"matmul_mod needs a prime below 2^31, got {prime}.")
    m64, v64, p = m.astype(np.uint64), v.astype(np.uint64), np.uint64(prime)
    out = np.zeros((m.shape[0], v.shape[1]), np.uint64)
    for k in range(m.shape[1]):
        out += m64[:, k:k + 1] * v64[k][None, :]
        if k % 3 == 2 or k == m.shape[1] - 1:
            out %= p
    return out.astype(np.int64)


__all__ = ["FIELD_PRIME", "KEY_BYTES", "ProtocolError", "RandomSource", "SHAMIR_PRIME",
           "agree", "key_pair", "lagrange_matrix", "matmul_mod", "open_sealed", "prg_bytes",
           "prg_field", "prg_uint32", "private_bytes", "public_bytes", "seal", "shamir_reconstruct",
           "shamir_share"]
