"""Additively homomorphic aggregation of the flattened update: CKKS and Paillier.

Phong, Aono, Hayashi, Wang, Moriai, "Privacy-Preserving Deep Learning via Additively
Homomorphic Encryption", ATIS 2017 (IEEE TIFS 2018): the clients share one key pair
that the server does not have; each client encrypts its update, the server adds the
ciphertexts, and the clients decrypt the sum. Their instantiations are LWE-based and
Paillier with packing; here:

- **CKKS** (Cheon, Kim, Kim, Song 2017) through TenSEAL: polynomial modulus 8192,
  coefficient moduli [60, 40, 40, 60] bits, scale 2^40, so 4,096 slots per
  ciphertext; approximate (error about 1e-9 absolute per entry at this scale). The
  server holds the context without the secret key.
- **Paillier** (1999) through ``phe`` (raw integer encryption), exact: the update is
  quantised like SecAgg's (:mod:`jgi.fl.secure.quantize`), and packed
  ``slot_bits = 32`` bits per entry into each plaintext (63 entries per 2048-bit
  ciphertext; Phong et al. pack likewise), so up to ``2^32 / 2^22 = 1023`` clients
  add without carries between slots. Addition of ciphertexts is multiplication modulo
  ``n^2``.

Both are optional: ``pip install tenseal phe`` (tested with tenseal 0.3.18, phe 1.5.0);
without them these backends raise :class:`MissingBackend` saying what to install.

Stages on the message interface of :mod:`jgi.fl.secure.protocol`:
``encrypted_input`` (each client sends its ciphertexts; the server adds them) and
``decrypt`` (the server sends the encrypted sum to every contributor, as in Phong et
al. where every client downloads it; the lowest-indexed contributor, the *key
holder* of this run, returns the decrypted sum so that the server ends up with the sum
as in SecAgg). Phong et al.'s server never sees the sum; returning it is our choice,
for one interface across schemes. Key generation and distribution to the clients is
set up once, outside the rounds (not in the measured costs).

Caveat: any client holds the secret key, so a client colluding with the server
decrypts every other client's update (Phong et al. assume no such collusion).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jgi.fl.secure.primitives import ProtocolError
from jgi.fl.secure.protocol import (NO_DROPOUTS, SERVER, Inbox, Message, run_protocol)
from jgi.fl.secure.quantize import Quantization

STAGES = ("encrypted_input", "decrypt")
CKKS_POLY_MODULUS = 8192
CKKS_COEFF_BITS = (60, 40, 40, 60)
CKKS_SCALE = 2.0**40
CKKS_SLOTS = CKKS_POLY_MODULUS // 2
SLOT_BITS = 32


class MissingBackend(ImportError):
    """An optional HE library is not installed."""


def _import(name: str, pip: str):
    try:
        return __import__(name)
    except ImportError as e:
        raise MissingBackend(f"the {pip} backend needs `pip install {pip}` (tested: tenseal "
                             f"0.3.18, phe 1.5.0); it is not installed: {e}") from e


def available(backend: str) -> bool:
    """Whether ``backend`` ("ckks" or "paillier") can run here."""
    try:
        _import("tenseal" if backend == "ckks" else "phe", backend)
        return True
    except MissingBackend:
        return False


@dataclasses.dataclass(frozen=True)
class HEConfig:
    """One run of HE aggregation.

    Attributes:
      backend: "ckks" or "paillier".
      num_clients, length: ``N`` and ``d``.
      paillier_bits: Paillier modulus size (2048).
      quantization: Paillier's fixed-point encoding (Flower's SecAgg+ defaults).
      run_id: bound into every message.
    """

    backend: str
    num_clients: int
    length: int
    paillier_bits: int = 2048
    quantization: Quantization = Quantization()
    run_id: int = 0

    def __post_init__(self):
        if self.backend not in ("ckks", "paillier"):
            raise ValueError(f"HEConfig.backend must be 'ckks' or 'paillier', got "
                             f"{self.backend!r}.")
        if self.num_clients < 1 or self.length < 1:
            raise ValueError(f"HEConfig needs num_clients >= 1 and length >= 1, got "
                             f"{self.num_clients} and {self.length}.")
        if self.backend == "paillier":
            if self.paillier_bits < 256 or self.paillier_bits % 8:
                raise ValueError(f"HEConfig.paillier_bits must be a multiple of 8 >= 256, got "
                                 f"{self.paillier_bits}.")
            if self.quantization.levels * self.num_clients >= 2**SLOT_BITS:
                raise ValueError(f"{self.num_clients} clients at {self.quantization.levels} "
                                 f"levels overflow a {SLOT_BITS}-bit Paillier slot.")

    @property
    def slots(self) -> int:
        """Entries per ciphertext."""
        return CKKS_SLOTS if self.backend == "ckks" else (self.paillier_bits - 1) // SLOT_BITS

    @property
    def ciphertexts(self) -> int:
        return -(-self.length // self.slots)

    @property
    def name(self) -> str:
        return self.backend


@dataclasses.dataclass
class HEKeys:
    """The clients' shared key material and the server's public part."""

    secret: object  # TenSEAL context with secret key, or phe private key
    public: object  # TenSEAL public context bytes, or phe public key


def make_keys(config: HEConfig) -> HEKeys:
    """A fresh key pair for ``config.backend`` (set up once, outside the rounds)."""
    if config.backend == "ckks":
        ts = _import("tenseal", "tenseal")
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=CKKS_POLY_MODULUS,
                         coeff_mod_bit_sizes=list(CKKS_COEFF_BITS))
        ctx.global_scale = CKKS_SCALE
        public = ctx.copy()
        public.make_context_public()
        return HEKeys(secret=ctx, public=public)
    phe = _import("phe", "phe")
    pk, sk = phe.generate_paillier_keypair(n_length=config.paillier_bits)
    return HEKeys(secret=sk, public=pk)


def _pack(ints: np.ndarray, slots: int) -> list[int]:
    padded = np.zeros(-(-ints.size // slots) * slots, "<u4")
    padded[:ints.size] = ints
    return [int.from_bytes(chunk.tobytes(), "little") for chunk in padded.reshape(-1, slots)]


def _unpack(values: list[int], slots: int, length: int) -> np.ndarray:
    raw = b"".join(v.to_bytes(4 * slots, "little") for v in values)
    return np.frombuffer(raw, "<u4")[:length].astype(np.uint32)


class Client:
    """One client: encrypts its float update, decrypts the sum when it is the key holder."""

    def __init__(self, index: int, x: np.ndarray, config: HEConfig, keys: HEKeys):
        x = np.asarray(x, np.float64)
        if x.shape != (config.length,):
            raise ValueError(f"client {index}: input must have shape ({config.length},), got "
                             f"{x.shape}.")
        self.i, self.x, self.config, self.keys = index, x, config, keys

    def step(self, stage, inbox):
        if len(inbox) != 1 or inbox[0].stage != stage or inbox[0].run_id != self.config.run_id:
            raise ProtocolError(f"client {self.i}: expected one server message of stage "
                                f"{stage!r}; refused.")
        payload = inbox[0].payload
        cfg = self.config
        if stage == "encrypted_input":
            return [Message(cfg.run_id, stage, self.i, SERVER, {"ct": self._encrypt()})]
        total = self._decrypt(payload["ct"])  # every contributor decrypts (Phong et al.)
        if not payload["reply"]:
            return []
        return [Message(cfg.run_id, stage, self.i, SERVER, {"total": total})]

    def _encrypt(self) -> list[bytes]:
        cfg = self.config
        if cfg.backend == "ckks":
            ts = _import("tenseal", "tenseal")
            return [ts.ckks_vector(self.keys.secret, self.x[k:k + cfg.slots].tolist()).serialize()
                    for k in range(0, cfg.length, cfg.slots)]
        pk = self.keys.public
        nbytes = 2 * cfg.paillier_bits // 8
        return [pk.raw_encrypt(m).to_bytes(nbytes, "big")
                for m in _pack(cfg.quantization.encode(self.x), cfg.slots)]

    def _decrypt(self, cts: list[bytes]) -> np.ndarray:
        cfg = self.config
        if cfg.backend == "ckks":
            ts = _import("tenseal", "tenseal")
            parts = [ts.ckks_vector_from(self.keys.secret, c).decrypt() for c in cts]
            return np.concatenate([np.asarray(p, np.float64) for p in parts])[:cfg.length]
        sk = self.keys.secret
        return _unpack([sk.raw_decrypt(int.from_bytes(c, "big")) for c in cts], cfg.slots,
                       cfg.length)


class Server:
    """Adds ciphertexts; never holds the secret key."""

    STAGES = STAGES

    def __init__(self, config: HEConfig, keys: HEKeys):
        self.config, self.public = config, keys.public
        self.total = None

    def start(self):
        return [Message(self.config.run_id, STAGES[0], SERVER, i, {})
                for i in range(self.config.num_clients)]

    def step(self, stage, inbox):
        cfg = self.config
        expected = range(cfg.num_clients) if stage == STAGES[0] else [self.holder]
        check = Inbox(cfg.run_id, stage, expected)
        got = {m.sender: m.payload for m in (check.accept(m) for m in inbox)}
        if stage == "encrypted_input":
            if not got:
                raise ProtocolError("stage 'encrypted_input': no client sent an update; no sum.")
            for i, p in got.items():
                cts = p.get("ct")
                if not isinstance(cts, list) or len(cts) != cfg.ciphertexts or \
                        not all(isinstance(c, bytes) for c in cts):
                    raise ProtocolError(f"stage {stage!r}: client {i} sent "
                                        f"{len(cts) if isinstance(cts, list) else 'no'} "
                                        f"ciphertexts, expected {cfg.ciphertexts}; refused.")
            self.contributors = sorted(got)
            self.holder = self.contributors[0]
            agg = self._add([got[i]["ct"] for i in self.contributors])
            return [Message(cfg.run_id, "decrypt", SERVER, i,
                            {"ct": agg, "reply": i == self.holder}) for i in self.contributors]
        if self.holder not in got:
            raise ProtocolError(f"stage 'decrypt': the key holder (client {self.holder}) dropped "
                                "before returning the sum; no sum.")
        total = np.asarray(got[self.holder]["total"])
        if total.shape != (cfg.length,):
            raise ProtocolError(f"stage 'decrypt': the key holder returned shape {total.shape}, "
                                f"expected ({cfg.length},); refused.")
        self.total = total
        return []

    def _add(self, per_client: list[list[bytes]]) -> list[bytes]:
        cfg = self.config
        if cfg.backend == "ckks":
            ts = _import("tenseal", "tenseal")
            try:
                out = []
                for k in range(cfg.ciphertexts):
                    acc = ts.ckks_vector_from(self.public, per_client[0][k])
                    for cts in per_client[1:]:
                        acc += ts.ckks_vector_from(self.public, cts[k])
                    out.append(acc.serialize())
                return out
            except Exception as e:  # TenSEAL raises ValueError/RuntimeError on bad bytes
                raise ProtocolError(f"stage 'encrypted_input': a malformed CKKS ciphertext: "
                                    f"{e}; refused.") from e
        n2 = self.public.nsquare
        nbytes = 2 * cfg.paillier_bits // 8
        out = []
        for k in range(cfg.ciphertexts):
            acc = 1
            for cts in per_client:
                c = int.from_bytes(cts[k], "big")
                if not 0 < c < n2:
                    raise ProtocolError("stage 'encrypted_input': a Paillier ciphertext outside "
                                        "Z_{n^2}; refused.")
                acc = acc * c % n2
            out.append(acc.to_bytes(nbytes, "big"))
        return out

    def result(self):
        if self.total is None:
            raise ProtocolError("the run did not finish; no sum.")
        return self.total, self.contributors


def run(inputs: np.ndarray, config: HEConfig, keys: HEKeys | None = None, dropouts=None,
        tamper=None):
    """HE aggregation of float ``inputs`` (N, d).

    Returns:
      :class:`~jgi.fl.secure.protocol.RunResult`; ``total`` is the float sum (CKKS) or
      the quantised sum (uint32, Paillier; decode with ``config.quantization``).
    """
    keys = keys or make_keys(config)
    inputs = np.asarray(inputs, np.float64)
    if inputs.shape[0] != config.num_clients:
        raise ValueError(f"{inputs.shape[0]} inputs for {config.num_clients} clients.")
    clients = [Client(i, inputs[i], config, keys) for i in range(config.num_clients)]
    return run_protocol(clients, Server(config, keys), dropouts or NO_DROPOUTS, tamper)


__all__ = ["CKKS_COEFF_BITS", "CKKS_POLY_MODULUS", "CKKS_SCALE", "CKKS_SLOTS", "HEConfig",
           "HEKeys", "MissingBackend", "STAGES", "available", "make_keys", "run"]
