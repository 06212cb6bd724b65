"""The message interface every aggregation scheme runs on, and the simulated network.

A scheme is a ``Client`` and a ``Server`` that exchange :class:`Message` objects in a
fixed list of stages (``scheme.STAGES``). :func:`run_protocol` plays the network: in
each stage every client still online reads the messages addressed to it and answers,
then the server reads the clients' messages and answers; clients drop out at the stage
:class:`Dropouts` names (they send nothing from that stage on). The driver times every
party's work and counts every message's bytes, so all schemes are measured the same way.

The server checks every message it receives (:meth:`Inbox.accept`): the run's id, the
current stage, a known sender that has not dropped, at most one message per sender and
stage (a replayed message is refused), and the payload's expected length. A refused
message raises :class:`~jgi.fl.secure.primitives.ProtocolError` and the run ends with
no sum released.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np

from jgi.fl.secure.primitives import ProtocolError

SERVER = -1
HEADER_BYTES = 16  # run id, stage, sender, recipient: counted once per message


@dataclasses.dataclass(frozen=True)
class Message:
    """One message of a protocol run.

    Attributes:
      run_id: the protocol run (a round of FedAvg) it belongs to.
      stage: the stage's name (one of the scheme's ``STAGES``).
      sender: client index, or :data:`SERVER`.
      recipient: client index, or :data:`SERVER`.
      payload: a dict of bytes, NumPy arrays, ints, and lists/dicts of those.
    """

    run_id: int
    stage: str
    sender: int
    recipient: int
    payload: Mapping[str, Any]

    def nbytes(self) -> int:
        """Size on the wire: a fixed header plus the payload's serialised size."""
        return HEADER_BYTES + payload_bytes(self.payload)


def payload_bytes(obj: Any) -> int:
    """Serialised size of a payload: bytes as is, arrays by ``nbytes``, ints by their
    bit length, containers by their items (dict keys as 4-byte tags)."""
    if obj is None:
        return 0
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (bool, np.bool_)):
        return 1
    if isinstance(obj, (int, np.integer)):
        return max(4, (int(obj).bit_length() + 7) // 8)
    if isinstance(obj, float):
        return 8
    if isinstance(obj, Mapping):
        return sum(4 + payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(payload_bytes(v) for v in obj)
    if hasattr(obj, "nbytes"):
        return int(obj.nbytes)
    raise TypeError(f"cannot size a payload item of type {type(obj).__name__}.")


@dataclasses.dataclass(frozen=True)
class Dropouts:
    """Which clients go offline before which stage (they send nothing from it on).

    Attributes:
      before: ``{stage name: client indices}``.
    """

    before: Mapping[str, frozenset[int]] = dataclasses.field(default_factory=dict)

    @staticmethod
    def at(stage: str, clients: Iterable[int]) -> "Dropouts":
        return Dropouts({stage: frozenset(int(c) for c in clients)})

    def check(self, stages: tuple[str, ...]) -> None:
        unknown = set(self.before) - set(stages)
        if unknown:
            raise ValueError(f"Dropouts name unknown stages {sorted(unknown)}; the scheme's "
                             f"stages are {', '.join(stages)}.")


NO_DROPOUTS = Dropouts()


@dataclasses.dataclass
class Costs:
    """Measured work of one run: seconds of compute and bytes sent, per party.

    Attributes:
      client_seconds: per client, the time in its own code (all stages).
      server_seconds: the server's time.
      client_bytes_sent, client_bytes_received: per client.
      server_bytes_sent: everything the server sent (relayed shares included).
      by_stage: per stage, ``{"client_seconds", "server_seconds", "bytes"}`` summed.
    """

    num_clients: int
    client_seconds: np.ndarray = None
    server_seconds: float = 0.0
    client_bytes_sent: np.ndarray = None
    client_bytes_received: np.ndarray = None
    server_bytes_sent: int = 0
    by_stage: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = self.num_clients
        if self.client_seconds is None:
            self.client_seconds = np.zeros(n)
            self.client_bytes_sent = np.zeros(n, np.int64)
            self.client_bytes_received = np.zeros(n, np.int64)

    def summary(self) -> dict:
        """Means over clients, the server's totals (JSON-ready)."""
        return {"client_seconds": float(np.mean(self.client_seconds)),
                "server_seconds": float(self.server_seconds),
                "client_bytes_sent": float(np.mean(self.client_bytes_sent)),
                "client_bytes_received": float(np.mean(self.client_bytes_received)),
                "server_bytes_sent": int(self.server_bytes_sent)}


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The outcome of :func:`run_protocol`.

    Attributes:
      total: what the server learned: the sum of the contributors' inputs (a ring /
        field vector for the masking schemes, floats for HE).
      contributors: the clients whose inputs are in ``total``.
      costs: :class:`Costs`.
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    costs: Costs


class Inbox:
    """The server's checks on incoming messages of one stage."""

    def __init__(self, run_id: int, stage: str, expected_senders: Iterable[int]):
        self.run_id, self.stage = run_id, stage
        self.expected = set(expected_senders)
        self.seen: set[int] = set()

    def accept(self, msg: Message) -> Message:
        if msg.run_id != self.run_id:
            raise ProtocolError(f"message from client {msg.sender} belongs to run "
                                f"{msg.run_id}, not the current run {self.run_id} (replayed?); "
                                "refused.")
        if msg.stage != self.stage:
            raise ProtocolError(f"message from client {msg.sender} is for stage {msg.stage!r} "
                                f"but the server is in stage {self.stage!r}; refused.")
        if msg.sender not in self.expected:
            raise ProtocolError(f"stage {self.stage!r}: client {msg.sender} is not a "
                                "participant of this stage; refused.")
        if msg.sender in self.seen:
            raise ProtocolError(f"stage {self.stage!r}: a second message from client "
                                f"{msg.sender} (replayed); refused.")
        self.seen.add(msg.sender)
        return msg


def check_vector(msg: Message, key: str, length: int, dtype) -> np.ndarray:
    """The payload's vector ``key``, refused unless it is a 1-D ``dtype`` array of ``length``."""
    v = msg.payload.get(key)
    if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype != np.dtype(dtype):
        raise ProtocolError(f"stage {msg.stage!r}: client {msg.sender} sent {key} that is not "
                            f"a 1-D {np.dtype(dtype).name} vector; refused.")
    if v.shape[0] != length:
        raise ProtocolError(f"stage {msg.stage!r}: client {msg.sender} sent {key} of length "
                            f"{v.shape[0]}, expected {length}; refused.")
    return v


def require_quorum(stage: str, have: Iterable[int], need: int, what: str) -> None:
    have = sorted(have)
    if len(have) < need:
        raise ProtocolError(f"stage {stage!r}: only {len(have)} clients {what} ({have}), fewer "
                            f"than the threshold {need}; the round ends and no partial sum is "
                            "released.")


def run_protocol(clients: list, server, dropouts: Dropouts = NO_DROPOUTS,
                 tamper=None) -> RunResult:
    """Runs a scheme's stages between ``clients`` and ``server`` over a simulated network.

    Args:
      clients: one object per client with ``step(stage, inbox) -> list[Message]``.
      server: an object with ``STAGES``, ``start() -> list[Message]``,
        ``step(stage, inbox) -> list[Message]`` and ``result() -> (total, contributors)``.
      dropouts: :class:`Dropouts`.
      tamper: optional ``fn(message) -> message`` applied to every message in transit
        (tests of the adversarial network).

    Returns:
      :class:`RunResult`.

    Raises:
      ProtocolError: a party refused a message or a quorum was missed.
    """
    stages = tuple(server.STAGES)
    dropouts.check(stages)
    costs = Costs(len(clients))
    online = set(range(len(clients)))
    t0 = time.perf_counter()
    to_clients = server.start()
    costs.server_seconds += time.perf_counter() - t0
    for stage in stages:
        online -= set(dropouts.before.get(stage, ()))
        rec = {"client_seconds": 0.0, "server_seconds": 0.0, "bytes": 0}
        for m in to_clients:
            costs.server_bytes_sent += m.nbytes()
            rec["bytes"] += m.nbytes()
            if m.recipient in online:
                costs.client_bytes_received[m.recipient] += m.nbytes()
        by_recipient: dict[int, list[Message]] = {}
        for m in to_clients:
            by_recipient.setdefault(m.recipient, []).append(
                tamper(m) if tamper is not None else m)
        from_clients = []
        for i in sorted(online):
            t0 = time.perf_counter()
            out = clients[i].step(stage, by_recipient.get(i, []))
            dt = time.perf_counter() - t0
            costs.client_seconds[i] += dt
            rec["client_seconds"] += dt
            for m in out:
                costs.client_bytes_sent[i] += m.nbytes()
                rec["bytes"] += m.nbytes()
                from_clients.append(tamper(m) if tamper is not None else m)
        t0 = time.perf_counter()
        to_clients = server.step(stage, from_clients)
        dt = time.perf_counter() - t0
        costs.server_seconds += dt
        rec["server_seconds"] = dt
        costs.by_stage[stage] = rec
    t0 = time.perf_counter()
    total, contributors = server.result()
    costs.server_seconds += time.perf_counter() - t0
    return RunResult(total=total, contributors=tuple(contributors), costs=costs)


__all__ = ["Costs", "Dropouts", "HEADER_BYTES", "Inbox", "Message", "NO_DROPOUTS",
           "RunResult", "SERVER", "check_vector", "payload_bytes", "require_quorum",
           "run_protocol"]
