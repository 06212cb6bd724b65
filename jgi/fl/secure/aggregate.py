"""One entry point for every scheme: float updates in, their (weighted) sum out.

:func:`secure_sum` quantises (for the masking schemes and Paillier), runs the scheme's
protocol (:func:`~jgi.fl.secure.protocol.run_protocol`) and decodes the sum, with the
same :class:`~jgi.fl.secure.protocol.Costs` for all, ``"plaintext"`` included (clients
send float32 vectors, the server adds them: FedAvg without protection, the baseline of
the overhead tables).

Defaults where the papers leave a choice (all overridable in :class:`SecureAggregation`):

- SecAgg threshold ``t = floor(n / 2) + 1`` of the neighbourhood ``n`` (a majority:
  Bonawitz et al. 2017 require ``t > n / 2`` for security against an honest-but-curious
  server that also controls clients; the run survives ``n - t`` dropouts).
- SecAgg+ degree ``k``: the even number nearest ``2 * ceil(log2 N)`` below ``N``
  (Bell et al. 2020: ``k = O(log N)``).
- LightSecAgg target ``U = ceil(0.7 N)`` (30 % dropouts tolerated, the largest rate of
  So et al.'s headline experiments apart from 50 %) and privacy ``T = floor(U / 2)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jgi.fl.secure import he, lightsecagg, secagg
from jgi.fl.secure.primitives import ProtocolError
from jgi.fl.secure.protocol import (NO_DROPOUTS, SERVER, Dropouts, Inbox, Message, RunResult,
                                    check_vector, run_protocol)
from jgi.fl.secure.quantize import Quantization

SCHEMES = ("plaintext", "secagg", "secagg+", "lightsecagg", "ckks", "paillier")
PLAINTEXT_STAGES = ("input",)


@dataclasses.dataclass(frozen=True)
class SecureAggregation:
    """Which scheme aggregates the updates, and its parameters.

    Attributes:
      scheme: one of :data:`SCHEMES`.
      threshold: SecAgg/SecAgg+ ``t`` (``None``: a majority of the neighbourhood).
      neighbours: SecAgg+ degree ``k`` (``None``: about ``2 log2 N``).
      privacy, target: LightSecAgg's ``T`` and ``U`` (``None``: the defaults above).
      quantization: fixed-point encoding (Flower's SecAgg+ defaults); LightSecAgg uses
        it with the modulus replaced by its prime ``2^31 - 1``.
      paillier_bits: Paillier modulus size.
      seed: ``None`` draws keys from the OS; an int makes runs reproducible (not secure).
    """

    scheme: str = "secagg"
    threshold: int | None = None
    neighbours: int | None = None
    privacy: int | None = None
    target: int | None = None
    quantization: Quantization = Quantization()
    paillier_bits: int = 2048
    seed: int | None = None

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"SecureAggregation.scheme must be one of {', '.join(SCHEMES)}, got "
                             f"{self.scheme!r}.")
        if self.neighbours is not None and self.scheme != "secagg+":
            raise ValueError(f"neighbours is SecAgg+'s degree; scheme {self.scheme!r} does not "
                             "take it (use scheme='secagg+').")

    def quantization_for(self) -> Quantization:
        if self.scheme == "lightsecagg":
            return dataclasses.replace(self.quantization, modulus=lightsecagg.PRIME)
        return self.quantization

    def protocol_config(self, num_clients: int, length: int, run_id: int = 0):
        """The scheme's own config for ``num_clients`` inputs of ``length``."""
        seed = None if self.seed is None else self.seed * 1_000_003 + run_id
        if self.scheme in ("secagg", "secagg+"):
            k = None
            if self.scheme == "secagg+":
                k = self.neighbours or default_degree(num_clients)
            hood = num_clients if k is None else k + 1
            t = self.threshold or hood // 2 + 1
            return secagg.SecAggConfig(num_clients, length, threshold=t, neighbours=k,
                                       run_id=run_id, seed=seed)
        if self.scheme == "lightsecagg":
            u = self.target or max(2, math.ceil(0.7 * num_clients))
            t = self.privacy or max(1, u // 2)
            return lightsecagg.LightSecAggConfig(num_clients, length, privacy=t, target=u,
                                                 run_id=run_id, seed=seed)
        if self.scheme in ("ckks", "paillier"):
            return he.HEConfig(self.scheme, num_clients, length,
                               paillier_bits=self.paillier_bits,
                               quantization=self.quantization, run_id=run_id)
        return PlaintextConfig(num_clients, length, run_id)

    def stages(self) -> tuple[str, ...]:
        return {"secagg": secagg.STAGES, "secagg+": secagg.STAGES,
                "lightsecagg": lightsecagg.STAGES, "ckks": he.STAGES,
                "paillier": he.STAGES}.get(self.scheme, PLAINTEXT_STAGES)


def default_degree(num_clients: int) -> int:
    """SecAgg+'s default even degree: about ``2 log2 N``, below ``N``."""
    k = 2 * math.ceil(math.log2(max(num_clients, 2)))
    k = min(k, num_clients - 1)
    return max(2, k - k % 2)


@dataclasses.dataclass(frozen=True)
class PlaintextConfig:
    num_clients: int
    length: int
    run_id: int = 0
    name = "plaintext"


class _PlainClient:
    def __init__(self, i, x, config):
        self.i, self.x, self.config = i, np.asarray(x, np.float32), config

    def step(self, stage, inbox):
        del inbox
        return [Message(self.config.run_id, stage, self.i, SERVER, {"x": self.x})]


class _PlainServer:
    STAGES = PLAINTEXT_STAGES

    def __init__(self, config):
        self.config, self.total = config, None

    def start(self):
        return [Message(self.config.run_id, "input", SERVER, i, {})
                for i in range(self.config.num_clients)]

    def step(self, stage, inbox):
        check = Inbox(self.config.run_id, stage, range(self.config.num_clients))
        got = {m.sender: check_vector(check.accept(m), "x", self.config.length, np.float32)
               for m in inbox}
        if not got:
            raise ProtocolError("no client sent an update; no sum.")
        self.contributors = sorted(got)
        self.total = np.sum([got[i].astype(np.float64) for i in self.contributors], axis=0)
        return []

    def result(self):
        return self.total, self.contributors


@dataclasses.dataclass(frozen=True)
class SecureSum:
    """What the server learned, decoded.

    Attributes:
      total: float64 (d,): the sum of the contributors' (clipped, quantised) inputs.
      contributors: whose inputs are in it.
      error_bound: the largest per-entry error of ``total`` against the float sum of
        the clipped inputs (quantisation; CKKS's is empirical, about 1e-9 per client at
        scale 2^40, not a bound; 0 for plaintext up to float32 rounding).
      run: the raw :class:`~jgi.fl.secure.protocol.RunResult` (costs, ring sum).
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    error_bound: float
    run: RunResult


def secure_sum(inputs: np.ndarray, config: SecureAggregation = SecureAggregation(),
               dropouts: Dropouts = NO_DROPOUTS, *, run_id: int = 0, keys=None,
               tamper=None) -> SecureSum:
    """Aggregates float ``inputs`` (N, d) with ``config.scheme``.

    Args:
      inputs: one row per client (already weighted if a weighted sum is wanted).
      config: :class:`SecureAggregation`.
      dropouts: who drops before which stage.
      run_id: the protocol run (FedAvg round); binds every message.
      keys: HE key material (:func:`jgi.fl.secure.he.make_keys`), made once and reused
        across rounds; ``None`` makes fresh keys (slow for Paillier).
      tamper: a function applied to every message in transit (tests).

    Returns:
      :class:`SecureSum`.

    Raises:
      ProtocolError: the protocol refused a message or too many clients dropped; no
        partial sum is released.
    """
    inputs = np.asarray(inputs, np.float64)
    if inputs.ndim != 2:
        raise ValueError(f"inputs must be (clients, length), got shape {inputs.shape}.")
    n, d = inputs.shape
    cfg = config.protocol_config(n, d, run_id)
    q = config.quantization_for()
    if config.scheme in ("secagg", "secagg+", "lightsecagg"):
        if n > q.max_clients():
            raise ValueError(f"{n} clients overflow the modulus {q.modulus} at {q.levels} "
                             f"levels (at most {q.max_clients()}).")
        encoded = np.stack([q.encode(v) for v in inputs])
        module = lightsecagg if config.scheme == "lightsecagg" else secagg
        run = module.run(encoded, cfg, dropouts, tamper)
        total = q.decode_sum(run.total, len(run.contributors))
        bound = q.error_bound(len(run.contributors))
    elif config.scheme in ("ckks", "paillier"):
        run = he.run(inputs, cfg, keys, dropouts, tamper)
        if config.scheme == "paillier":
            total = q.decode_sum(run.total, len(run.contributors))
            bound = q.error_bound(len(run.contributors))
        else:
            total, bound = np.asarray(run.total, np.float64), 1e-8 * len(run.contributors)
    else:
        clients = [_PlainClient(i, inputs[i], cfg) for i in range(n)]
        run = run_protocol(clients, _PlainServer(cfg), dropouts, tamper)
        total, bound = run.total, 0.0
    return SecureSum(total=total, contributors=run.contributors, error_bound=bound, run=run)


__all__ = ["SCHEMES", "SecureAggregation", "SecureSum", "default_degree", "secure_sum"]
