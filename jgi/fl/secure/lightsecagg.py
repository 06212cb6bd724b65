"""LightSecAgg: one-shot reconstruction of the aggregate mask from coded mask shares.

So, He, Yang, Prakash, Avestimehr, "LightSecAgg: a Lightweight and Versatile Design for
Secure Aggregation in Federated Learning", MLSys 2022 (arXiv 2109.14236), section 4.
Parameters: ``N`` clients, privacy ``T`` (any ``T`` colluding clients learn nothing of
another's mask), target ``U`` survivors (``T < U <= N``; up to ``N - U`` dropouts).
Over ``F_p``, ``p = 2^31 - 1``, on the same message interface as
:mod:`jgi.fl.secure.secagg`:

1. ``advertise_keys``: each client sends an X25519 channel public key.
2. ``share_masks``: client ``i`` draws a uniform mask ``z_i`` (length ``d`` padded to
   a multiple of ``U - T``), cuts it into ``U - T`` pieces, adds ``T`` uniform noise
   pieces, and encodes the ``U`` pieces with a Lagrange (MDS) code: the polynomial
   ``f_i`` of degree ``U - 1`` with ``f_i(beta_k) = piece_k`` is evaluated at
   ``alpha_j``, one point per client; ``f_i(alpha_j)`` goes to client ``j``
   AES-GCM-encrypted, relayed by the server.
3. ``masked_input``: ``y_i = x_i + z_i mod p`` (``U1``: those who sent; at least
   ``U``).
4. ``aggregate_mask``: the server names ``U1``; each surviving client ``j`` sends the
   sum of the shares it holds from ``U1``, ``sum_{i in U1} f_i(alpha_j)``, one
   evaluation of ``sum_i f_i``. From any ``U`` of them the server interpolates
   ``sum_i f_i`` at ``beta_1 .. beta_{U-T}``, which is ``sum_{i in U1} z_i``, in one
   shot, whoever dropped when, and subtracts it.

Choices where the paper is silent: ``beta_k = k`` (k = 1..U) and
``alpha_j = U + 1 + j``; masks and noise from the client's random source (AES-CTR, 64
bits reduced mod p); the masked vector is sent with its first ``d`` entries only (the
padding's masks are decoded and discarded).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jgi.fl.secure import primitives as P
from jgi.fl.secure.protocol import (NO_DROPOUTS, SERVER, Inbox, Message, check_vector,
                                    require_quorum, run_protocol)

STAGES = ("advertise_keys", "share_masks", "masked_input", "aggregate_mask")
CHANNEL_INFO = b"jgi-lightsecagg channel key"
PRIME = P.FIELD_PRIME


@dataclasses.dataclass(frozen=True)
class LightSecAggConfig:
    """One run of LightSecAgg.

    Attributes:
      num_clients: ``N``.
      length: the input vector's length ``d`` (public).
      privacy: ``T`` (>= 1), colluding clients that learn nothing of a mask.
      target: ``U``, the survivors needed (``T < U <= N``).
      run_id, seed: as in :class:`~jgi.fl.secure.secagg.SecAggConfig`.
    """

    num_clients: int
    length: int
    privacy: int
    target: int
    run_id: int = 0
    seed: int | None = None

    def __post_init__(self):
        if self.num_clients < 2 or self.length < 1:
            raise ValueError(f"LightSecAggConfig needs num_clients >= 2 and length >= 1, got "
                             f"{self.num_clients} and {self.length}.")
        if not 1 <= self.privacy < self.target <= self.num_clients:
            raise ValueError(f"LightSecAggConfig needs 1 <= privacy T < target U <= N = "
                             f"{self.num_clients}, got T={self.privacy}, U={self.target}.")

    @property
    def pieces(self) -> int:
        return self.target - self.privacy

    @property
    def piece_length(self) -> int:
        return -(-self.length // self.pieces)

    @property
    def betas(self) -> list[int]:
        return list(range(1, self.target + 1))

    def alpha(self, j: int) -> int:
        return self.target + 1 + j

    name = "lightsecagg"


def _associated(run_id: int, sender: int, recipient: int) -> bytes:
    return f"lightsecagg|run {run_id}|share_masks|{sender}->{recipient}".encode()


def _to_bytes(v: np.ndarray) -> bytes:
    return v.astype("<u4").tobytes()


class Client:
    """One client's side of LightSecAgg."""

    def __init__(self, index: int, x: np.ndarray, config: LightSecAggConfig):
        x = np.asarray(x)
        if x.shape != (config.length,) or x.dtype != np.uint32 or (x.size and x.max() >= PRIME):
            raise ValueError(f"client {index}: input must be a uint32 vector of length "
                             f"{config.length} with entries below {PRIME}, got {x.dtype} "
                             f"{x.shape}.")
        self.i, self.x, self.config = index, x, config
        self.rand = P.RandomSource(config.seed, f"lightsecagg client {index} run {config.run_id}")

    def _msg(self, stage, payload):
        return [Message(self.config.run_id, stage, self.i, SERVER, payload)]

    def step(self, stage: str, inbox: list[Message]) -> list[Message]:
        if len(inbox) != 1 or inbox[0].sender != SERVER or inbox[0].stage != stage or \
                inbox[0].run_id != self.config.run_id:
            raise P.ProtocolError(f"client {self.i}: expected one server message of stage "
                                  f"{stage!r} in run {self.config.run_id}; refused.")
        return getattr(self, "_" + stage)(stage, dict(inbox[0].payload))

    def _advertise_keys(self, stage, payload):
        del payload
        self.c_sk, c_pk = P.key_pair(self.rand)
        return self._msg(stage, {"c_pk": c_pk})

    def _share_masks(self, stage, payload):
        cfg = self.config
        self.keys = payload["keys"]
        require_quorum(stage, self.keys, cfg.target, f"advertised keys to client {self.i}")
        L, k = cfg.piece_length, cfg.pieces
        self.z = P.prg_field(self.rand.bytes(P.KEY_BYTES), k * L)
        noise = P.prg_field(self.rand.bytes(P.KEY_BYTES), cfg.privacy * L)
        pieces = np.concatenate([self.z, noise]).reshape(cfg.target, L)
        holders = sorted(self.keys)
        code = P.lagrange_matrix(cfg.betas, [cfg.alpha(j) for j in holders])
        coded = P.matmul_mod(code, pieces)
        sealed = {}
        for row, j in zip(coded, holders, strict=True):
            if j == self.i:
                self.own = row
                continue
            key = P.agree(self.c_sk, self.keys[j], CHANNEL_INFO)
            sealed[j] = P.seal(key, _to_bytes(row), _associated(cfg.run_id, self.i, j),
                               self.rand)
        return self._msg(stage, {"shares": sealed})

    def _masked_input(self, stage, payload):
        cfg = self.config
        self.held = {self.i: self.own}
        for j, c in payload["shares"].items():
            if j not in self.keys:
                raise P.ProtocolError(f"client {self.i}: a share from client {j}, which did "
                                      "not advertise a key to it; refused.")
            key = P.agree(self.c_sk, self.keys[j], CHANNEL_INFO)
            plain = P.open_sealed(key, c, _associated(cfg.run_id, j, self.i),
                                  f"mask share from client {j} to client {self.i}")
            if len(plain) != 4 * cfg.piece_length:
                raise P.ProtocolError(f"client {self.i}: mask share from client {j} has "
                                      f"{len(plain)} bytes, expected {4 * cfg.piece_length}; "
                                      "refused.")
            row = np.frombuffer(plain, "<u4").astype(np.int64)
            if row.max(initial=0) >= PRIME:
                raise P.ProtocolError(f"client {self.i}: mask share from client {j} is outside "
                                      "the field; refused.")
            self.held[j] = row
        y = (self.x.astype(np.int64) + self.z[:cfg.length]) % PRIME
        return self._msg(stage, {"y": y.astype(np.uint32)})

    def _aggregate_mask(self, stage, payload):
        u1 = set(payload["contributors"])
        require_quorum(stage, u1, self.config.target, f"contributed (client {self.i}'s view)")
        missing = u1 - set(self.held)
        if missing:
            raise P.ProtocolError(f"client {self.i}: the server names contributors "
                                  f"{sorted(missing)} whose mask shares it never received; "
                                  "refused.")
        agg = np.zeros(self.config.piece_length, np.int64)
        for j in sorted(u1):
            agg = (agg + self.held[j]) % PRIME
        return self._msg(stage, {"aggregate_share": agg.astype(np.uint32)})


class Server:
    """LightSecAgg's server: relays shares, decodes the aggregate mask once."""

    STAGES = STAGES

    def __init__(self, config: LightSecAggConfig):
        self.config = config
        self.total = None

    def _to(self, stage, j, payload):
        return Message(self.config.run_id, stage, SERVER, j, payload)

    def start(self):
        return [self._to(STAGES[0], i, {}) for i in range(self.config.num_clients)]

    def step(self, stage, inbox):
        expected = {"advertise_keys": range(self.config.num_clients),
                    "share_masks": getattr(self, "u_keys", ()),
                    "masked_input": getattr(self, "u_shares", ()),
                    "aggregate_mask": getattr(self, "u1", ())}[stage]
        check = Inbox(self.config.run_id, stage, expected)
        msgs = [check.accept(m) for m in inbox]
        return getattr(self, "_" + stage)(stage, {m.sender: m.payload for m in msgs})

    def _advertise_keys(self, stage, got):
        for i, p in got.items():
            if not isinstance(p.get("c_pk"), bytes) or len(p["c_pk"]) != P.KEY_BYTES:
                raise P.ProtocolError(f"stage {stage!r}: client {i} sent a malformed c_pk; "
                                      "refused.")
        self.u_keys = set(got)
        require_quorum(stage, self.u_keys, self.config.target, "advertised keys")
        keys = {i: p["c_pk"] for i, p in got.items()}
        return [self._to("share_masks", i, {"keys": keys}) for i in sorted(self.u_keys)]

    def _share_masks(self, stage, got):
        relay = {j: {} for j in got}
        for i, p in got.items():
            shares = p.get("shares")
            if not isinstance(shares, dict) or not set(shares) <= self.u_keys - {i} or \
                    not all(isinstance(c, bytes) for c in shares.values()):
                raise P.ProtocolError(f"stage {stage!r}: client {i} sent malformed or "
                                      "misaddressed mask shares; refused.")
            for j, c in shares.items():
                if j in relay:
                    relay[j][i] = c
        self.u_shares = set(got)
        require_quorum(stage, self.u_shares, self.config.target, "shared masks")
        return [self._to("masked_input", j, {"shares": relay[j]}) for j in sorted(got)]

    def _masked_input(self, stage, got):
        self.y = {}
        for i, p in got.items():
            y = check_vector(Message(self.config.run_id, stage, i, SERVER, p), "y",
                             self.config.length, np.uint32)
            if y.max(initial=0) >= PRIME:
                raise P.ProtocolError(f"stage {stage!r}: client {i}'s masked input is outside "
                                      "the field; refused.")
            self.y[i] = y
        self.u1 = set(got)
        require_quorum(stage, self.u1, self.config.target, "sent masked inputs")
        return [self._to("aggregate_mask", j, {"contributors": sorted(self.u1)})
                for j in sorted(self.u1)]

    def _aggregate_mask(self, stage, got):
        cfg = self.config
        require_quorum(stage, got, cfg.target, "returned aggregate mask shares")
        chosen = sorted(got)[:cfg.target]
        rows = np.stack([check_vector(Message(cfg.run_id, stage, j, SERVER, got[j]),
                                      "aggregate_share", cfg.piece_length, np.uint32)
                         for j in chosen]).astype(np.int64)
        decode = P.lagrange_matrix([cfg.alpha(j) for j in chosen], cfg.betas[:cfg.pieces])
        mask = P.matmul_mod(decode, rows).reshape(-1)[:cfg.length]
        total = np.zeros(cfg.length, np.int64)
        for i in sorted(self.u1):
            total = (total + self.y[i]) % PRIME
        self.total = ((total - mask) % PRIME).astype(np.uint32)
        return []

    def result(self):
        if self.total is None:
            raise P.ProtocolError("the run did not finish; no sum.")
        return self.total, sorted(self.u1)


def run(inputs: np.ndarray, config: LightSecAggConfig, dropouts=None, tamper=None):
    """Runs LightSecAgg on quantised ``inputs`` (N, d), entries below ``p``.

    Returns:
      :class:`~jgi.fl.secure.protocol.RunResult`; ``total`` is the contributors' sum
      modulo ``p = 2^31 - 1`` (uint32).
    """
    inputs = np.asarray(inputs)
    if inputs.shape[0] != config.num_clients:
        raise ValueError(f"{inputs.shape[0]} inputs for {config.num_clients} clients.")
    clients = [Client(i, inputs[i], config) for i in range(config.num_clients)]
    return run_protocol(clients, Server(config), dropouts or NO_DROPOUTS, tamper)


__all__ = ["Client", "LightSecAggConfig", "PRIME", "STAGES", "Server", "run"]
