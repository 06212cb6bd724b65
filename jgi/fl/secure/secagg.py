"""Secure aggregation (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth, "Practical
Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017 (the catalogue
lists its NeurIPS 2016 workshop version, "Practical Secure Aggregation for Federated
Learning on User-Held Data"), Figure 4, the **semi-honest (honest-but-curious)
variant**: the malicious-server variant's ConsistencyCheck round and its signatures
(a PKI) are not implemented. Stages, one message each way per stage:

0. setup (server): the neighbour graph and the threshold ``t``.
1. ``advertise_keys``: each client makes two X25519 key pairs, ``c`` (channel) and
   ``s`` (masks), and sends both public keys; the server forwards them to the client's
   neighbours (``U1``: those who answered).
2. ``share_keys``: each client draws a self-mask seed ``b_i``, Shamir-shares ``b_i``
   and its mask private key ``s_i^SK`` among its neighbourhood (itself included,
   threshold ``t``), and sends each neighbour's pair of shares AES-GCM-encrypted under
   ``HKDF(X25519(c_i, c_j))``; the server relays the ciphertexts (``U2``).
3. ``masked_input``: ``y_i = x_i + PRG(b_i) + sum_{j in U2 ∩ N(i)} ±PRG(s_ij) mod 2^32``
   with ``s_ij = HKDF(X25519(s_i, s_j))``, ``+`` for ``i < j`` and ``-`` for
   ``i > j``, so pairwise masks cancel in the sum (``U3``: those who sent).
4. ``unmask``: the server names the survivors ``U3`` and the dropped ``U2 \\ U3``; each
   survivor returns its share of ``b_i`` for every surviving neighbour and of
   ``s_i^SK`` for every dropped one (never both for one client). With ``t`` shares of
   each the server removes the self masks of the survivors and the pairwise masks
   the survivors shared with the dropped clients.

A client may drop before any stage; the run ends with a
:class:`~jgi.fl.secure.primitives.ProtocolError` and no sum when fewer than ``t``
clients are left where shares are needed.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server Aggregation
with (Poly)Logarithmic Overhead", CCS 2020) runs the same stages on a sparse graph:
each client has ``k`` neighbours in a random Harary graph (the clients placed on a ring
in a random order, each joined to its ``k / 2`` nearest on either side), so masks,
shares and key agreements scale with ``k`` (``O(log N)`` in the paper) instead of
``N``, and ``t`` counts within a neighbourhood of ``k + 1``. Flower's SecAgg+ workflow
(``num_shares``, ``reconstruction_threshold``) is the behavioural reference.

Choices where the papers are silent: the server draws the graph (from the run's
seed); Shamir shares sit at ``x = client index + 1``; the PRG is AES-256-CTR (see
:mod:`jgi.fl.secure.primitives`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from cryptography.hazmat.primitives.asymmetric import x25519

from jgi.fl.secure import primitives as P
from jgi.fl.secure.protocol import (NO_DROPOUTS, SERVER, Inbox, Message, check_vector,
                                    require_quorum, run_protocol)

STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")
CHANNEL_INFO = b"jgi-secagg channel key"
MASK_INFO = b"jgi-secagg pairwise mask"
SHARE_PAIR_BYTES = 8 + 2 * P.SHAMIR_SHARE_BYTES


@dataclasses.dataclass(frozen=True)
class SecAggConfig:
    """One run of SecAgg / SecAgg+.

    Attributes:
      num_clients: ``N``.
      length: the input vector's length ``d`` (public).
      threshold: ``t``, the shares needed to reconstruct a secret (and the fewest
        clients the run continues with), within a neighbourhood.
      neighbours: ``None`` for SecAgg (the complete graph), or an even ``k < N`` for
        SecAgg+'s random Harary graph of degree ``k``.
      run_id: bound into every message and AES-GCM associated data.
      seed: ``None`` draws keys and seeds from the OS; an int makes the run
        reproducible (tests and benchmarks only).
    """

    num_clients: int
    length: int
    threshold: int
    neighbours: int | None = None
    run_id: int = 0
    seed: int | None = None

    def __post_init__(self):
        if self.num_clients < 2:
            raise ValueError(f"SecAggConfig.num_clients must be >= 2, got {self.num_clients}.")
        if self.length < 1:
            raise ValueError(f"SecAggConfig.length must be >= 1, got {self.length}.")
        if self.neighbours is not None:
            k = self.neighbours
            if k % 2 or not 2 <= k < self.num_clients:
                raise ValueError(f"SecAggConfig.neighbours must be an even k in [2, "
                                 f"{self.num_clients - 1}] (or None for the complete graph), "
                                 f"got {k}.")
        if not 2 <= self.threshold <= self.neighbourhood:
            raise ValueError(f"SecAggConfig.threshold must be in [2, {self.neighbourhood}] (the "
                             f"neighbourhood with the client itself), got {self.threshold}.")

    @property
    def neighbourhood(self) -> int:
        """Clients a secret is shared among: the neighbours and the client itself."""
        return self.num_clients if self.neighbours is None else self.neighbours + 1

    @property
    def name(self) -> str:
        return "secagg" if self.neighbours is None else "secagg+"


def harary_graph(n: int, k: int | None, rand: P.RandomSource) -> list[frozenset[int]]:
    """Each client's neighbours (itself excluded): complete for ``k=None``, else a
    Harary graph of even degree ``k`` on a random ring order (SecAgg+)."""
    if k is None:
        return [frozenset(set(range(n)) - {i}) for i in range(n)]
    order = list(range(n))
    for i in range(n - 1, 0, -1):  # Fisher-Yates from the run's randomness
        j = rand.below(i + 1)
        order[i], order[j] = order[j], order[i]
    pos = {c: p for p, c in enumerate(order)}
    return [frozenset(order[(pos[i] + o) % n] for o in range(-k // 2, k // 2 + 1) if o)
            for i in range(n)]


def _associated(run_id: int, sender: int, recipient: int) -> bytes:
    return f"secagg|run {run_id}|share_keys|{sender}->{recipient}".encode()


def _sign(i: int, j: int) -> int:
    return 1 if i < j else -1


class Client:
    """One client's side of SecAgg / SecAgg+ (holds its input and secrets)."""

    def __init__(self, index: int, x: np.ndarray, config: SecAggConfig):
        x = np.asarray(x)
        if x.shape != (config.length,) or x.dtype != np.uint32:
            raise ValueError(f"client {index}: input must be a uint32 vector of length "
                             f"{config.length} (quantised), got {x.dtype} {x.shape}.")
        self.i, self.x, self.config = index, x, config
        self.rand = P.RandomSource(config.seed, f"secagg client {index} run {config.run_id}")
        self.released: dict[int, str] = {}

    def _msg(self, stage: str, payload: dict) -> list[Message]:
        return [Message(self.config.run_id, stage, self.i, SERVER, payload)]

    def _only(self, stage: str, inbox: list[Message]) -> dict:
        for m in inbox:
            if m.sender != SERVER or m.stage != stage or m.run_id != self.config.run_id:
                raise P.ProtocolError(f"client {self.i}: unexpected message {m.stage!r} from "
                                      f"{m.sender} in run {m.run_id}; refused.")
        if len(inbox) != 1:
            raise P.ProtocolError(f"client {self.i}: expected one message from the server in "
                                  f"stage {stage!r}, got {len(inbox)}.")
        return dict(inbox[0].payload)

    def step(self, stage: str, inbox: list[Message]) -> list[Message]:
        payload = self._only(stage, inbox)
        return getattr(self, "_" + stage)(stage, payload)

    def _advertise_keys(self, stage, payload):
        self.neighbours = frozenset(payload["neighbours"])
        self.c_sk, c_pk = P.key_pair(self.rand)
        self.s_sk, s_pk = P.key_pair(self.rand)
        return self._msg(stage, {"c_pk": c_pk, "s_pk": s_pk})

    def _share_keys(self, stage, payload):
        keys = payload["keys"]
        if not set(keys) <= self.neighbours | {self.i}:
            raise P.ProtocolError(f"client {self.i}: the server sent keys of non-neighbours "
                                  f"{sorted(set(keys) - self.neighbours - {self.i})}; refused.")
        pks = [k for pair in keys.values() for k in pair]
        if len(set(pks)) != len(pks):
            raise P.ProtocolError(f"client {self.i}: advertised public keys are not distinct; "
                                  "refused.")
        require_quorum(stage, keys, self.config.threshold, f"advertised keys to client {self.i}")
        self.keys = keys
        self.b = self.rand.bytes(P.KEY_BYTES)
        holders = sorted(keys)
        xs = [j + 1 for j in holders]
        s_shares = P.shamir_share(P.private_bytes(self.s_sk), xs, self.config.threshold,
                                  self.rand)
        b_shares = P.shamir_share(self.b, xs, self.config.threshold, self.rand)
        sealed = {}
        for j, s_sh, b_sh in zip(holders, s_shares, b_shares, strict=True):
            if j == self.i:
                self.own_shares = (s_sh, b_sh)
                continue
            key = P.agree(self.c_sk, keys[j][0], CHANNEL_INFO)
            plain = self.i.to_bytes(4, "big") + j.to_bytes(4, "big") + s_sh + b_sh
            sealed[j] = P.seal(key, plain, _associated(self.config.run_id, self.i, j), self.rand)
        return self._msg(stage, {"shares": sealed})

    def _masked_input(self, stage, payload):
        self.received = dict(payload["shares"])
        if not set(self.received) <= set(self.keys) - {self.i}:
            raise P.ProtocolError(f"client {self.i}: relayed shares from clients that did not "
                                  "advertise keys to it; refused.")
        u2 = set(self.received) | {self.i}
        require_quorum(stage, u2, self.config.threshold, f"shared keys with client {self.i}")
        y = self.x + P.prg_uint32(self.b, self.config.length)
        for j in sorted(u2 - {self.i}):
            mask = P.prg_uint32(P.agree(self.s_sk, self.keys[j][1], MASK_INFO),
                                self.config.length)
            y = y + mask if _sign(self.i, j) > 0 else y - mask  # uint32 wraps mod 2^32
        self.u2 = u2
        return self._msg(stage, {"y": y})

    def _unmask(self, stage, payload):
        survivors, dropped = set(payload["survivors"]), set(payload["dropped"])
        if survivors & dropped:
            raise P.ProtocolError(f"client {self.i}: the server asks for both shares of "
                                  f"{sorted(survivors & dropped)}, which would reveal their "
                                  "inputs; refused.")
        if not (survivors | dropped) <= self.u2:
            raise P.ProtocolError(f"client {self.i}: the server asks about clients "
                                  f"{sorted((survivors | dropped) - self.u2)} that shared "
                                  "nothing with it; refused.")
        require_quorum(stage, survivors, self.config.threshold,
                       f"survive in client {self.i}'s neighbourhood")
        b_out, s_out = {}, {}
        for j in sorted(survivors | dropped):
            kind = "b" if j in survivors else "s"
            if self.released.get(j, kind) != kind:
                raise P.ProtocolError(f"client {self.i}: already released the other share of "
                                      f"client {j}; refused.")
            self.released[j] = kind
            if j == self.i:
                s_sh, b_sh = self.own_shares
            else:
                key = P.agree(self.c_sk, self.keys[j][0], CHANNEL_INFO)
                plain = P.open_sealed(key, self.received[j],
                                      _associated(self.config.run_id, j, self.i),
                                      f"share from client {j} to client {self.i}")
                if (len(plain) != SHARE_PAIR_BYTES or int.from_bytes(plain[:4], "big") != j
                        or int.from_bytes(plain[4:8], "big") != self.i):
                    raise P.ProtocolError(f"client {self.i}: malformed share from client {j}; "
                                          "refused.")
                s_sh = plain[8:8 + P.SHAMIR_SHARE_BYTES]
                b_sh = plain[8 + P.SHAMIR_SHARE_BYTES:]
            (b_out if kind == "b" else s_out)[j] = b_sh if kind == "b" else s_sh
        return self._msg(stage, {"b_shares": b_out, "s_shares": s_out})


class Server:
    """The server's side: relays, checks, and unmasks only the sum."""

    STAGES = STAGES

    def __init__(self, config: SecAggConfig):
        self.config = config
        self.rand = P.RandomSource(config.seed, f"secagg server run {config.run_id}")
        self.graph = harary_graph(config.num_clients, config.neighbours, self.rand)
        self.total = None

    def _to(self, stage: str, j: int, payload: dict) -> Message:
        return Message(self.config.run_id, stage, SERVER, j, payload)

    def start(self) -> list[Message]:
        return [self._to(STAGES[0], i, {"neighbours": sorted(self.graph[i]),
                                        "threshold": self.config.threshold})
                for i in range(self.config.num_clients)]

    def step(self, stage: str, inbox: list[Message]) -> list[Message]:
        expected = {"advertise_keys": range(self.config.num_clients),
                    "share_keys": getattr(self, "u1", ()), "masked_input": getattr(self, "u2", ()),
                    "unmask": getattr(self, "u3", ())}[stage]
        check = Inbox(self.config.run_id, stage, expected)
        msgs = [check.accept(m) for m in inbox]
        return getattr(self, "_" + stage)(stage, {m.sender: m.payload for m in msgs})

    def _hood(self, i: int) -> set[int]:
        return set(self.graph[i]) | {i}

    def _advertise_keys(self, stage, got):
        for i, p in got.items():
            for k in ("c_pk", "s_pk"):
                if not isinstance(p.get(k), bytes) or len(p[k]) != P.KEY_BYTES:
                    raise P.ProtocolError(f"stage {stage!r}: client {i} sent a malformed {k}; "
                                          "refused.")
        self.u1 = set(got)
        require_quorum(stage, self.u1, self.config.threshold, "advertised keys")
        self.pks = {i: (p["c_pk"], p["s_pk"]) for i, p in got.items()}
        return [self._to("share_keys", i,
                         {"keys": {j: self.pks[j] for j in sorted(self._hood(i) & self.u1)}})
                for i in sorted(self.u1)]

    def _share_keys(self, stage, got):
        relay: dict[int, dict[int, bytes]] = {j: {} for j in got}
        for i, p in got.items():
            shares = p.get("shares")
            if not isinstance(shares, dict) or not set(shares) <= (self._hood(i) & self.u1) - {i}:
                raise P.ProtocolError(f"stage {stage!r}: client {i} addressed shares outside "
                                      "its neighbourhood; refused.")
            for j, c in shares.items():
                if not isinstance(c, bytes):
                    raise P.ProtocolError(f"stage {stage!r}: client {i} sent a malformed share "
                                          f"for client {j}; refused.")
                if j in relay:
                    relay[j][i] = c
        self.u2 = set(got)
        require_quorum(stage, self.u2, self.config.threshold, "shared keys")
        return [self._to("masked_input", j, {"shares": relay[j]}) for j in sorted(self.u2)]

    def _masked_input(self, stage, got):
        self.y = {i: check_vector(Message(self.config.run_id, stage, i, SERVER, p), "y",
                                  self.config.length, np.uint32) for i, p in got.items()}
        self.u3 = set(got)
        require_quorum(stage, self.u3, self.config.threshold, "sent masked inputs")
        self.dropped = self.u2 - self.u3
        return [self._to("unmask", j, {"survivors": sorted(self._hood(j) & self.u3),
                                       "dropped": sorted(self._hood(j) & self.dropped)})
                for j in sorted(self.u3)]

    def _unmask(self, stage, got):
        b_pts: dict[int, dict[int, bytes]] = {i: {} for i in self.u3}
        s_pts: dict[int, dict[int, bytes]] = {i: {} for i in self.dropped}
        for j, p in got.items():
            asked_b, asked_s = self._hood(j) & self.u3, self._hood(j) & self.dropped
            b_sh, s_sh = p.get("b_shares", {}), p.get("s_shares", {})
            if set(b_sh) != asked_b or set(s_sh) != asked_s:
                raise P.ProtocolError(f"stage {stage!r}: client {j} answered for other clients "
                                      "than asked; refused.")
            for i, sh in b_sh.items():
                b_pts[i][j + 1] = sh
            for i, sh in s_sh.items():
                s_pts[i][j + 1] = sh
        t, d = self.config.threshold, self.config.length
        for what, pts in (("self-mask seed", b_pts), ("mask key", s_pts)):
            for i, shares in pts.items():
                if len(shares) < t:
                    raise P.ProtocolError(
                        f"stage {stage!r}: only {len(shares)} shares of client {i}'s {what}, "
                        f"fewer than the threshold {t} (too many dropouts in its "
                        "neighbourhood); the round ends and no partial sum is released.")
        total = np.zeros(d, np.uint32)
        for i in sorted(self.u3):
            total = total + self.y[i]
        for i in sorted(self.u3):
            total = total - P.prg_uint32(P.shamir_reconstruct(b_pts[i], t, P.KEY_BYTES), d)
        for i in sorted(self.dropped):
            sk = x25519.X25519PrivateKey.from_private_bytes(
                P.shamir_reconstruct(s_pts[i], t, P.KEY_BYTES))
            if P.public_bytes(sk) != self.pks[i][1]:
                raise P.ProtocolError(f"stage {stage!r}: the shares of client {i}'s mask key do "
                                      "not reconstruct its advertised key (malformed shares); "
                                      "no partial sum is released.")
            for j in sorted(self._hood(i) & self.u3 - {i}):
                mask = P.prg_uint32(P.agree(sk, self.pks[j][1], MASK_INFO), d)
                # Survivor j added sign(j, i) * PRG(s_ji); take it out.
                total = total - mask if _sign(j, i) > 0 else total + mask
        self.total = total
        return []

    def result(self):
        if self.total is None:
            raise P.ProtocolError("the run did not finish; no sum.")
        return self.total, sorted(self.u3)


def run(inputs: np.ndarray, config: SecAggConfig, dropouts=None, tamper=None):
    """Runs SecAgg / SecAgg+ on quantised ``inputs`` (N, d) uint32.

    Returns:
      :class:`~jgi.fl.secure.protocol.RunResult`; ``total`` is the contributors' sum
      modulo 2^32 (uint32).
    """
    inputs = np.asarray(inputs)
    if inputs.shape[0] != config.num_clients:
        raise ValueError(f"{inputs.shape[0]} inputs for {config.num_clients} clients.")
    clients = [Client(i, inputs[i], config) for i in range(config.num_clients)]
    return run_protocol(clients, Server(config), dropouts or NO_DROPOUTS, tamper)


__all__ = ["Client", "STAGES", "SecAggConfig", "Server", "harary_graph", "run"]
