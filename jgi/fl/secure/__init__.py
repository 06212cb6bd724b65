"""Aggregation the server cannot read: secure aggregation and homomorphic encryption.

The four encrypting defenses of the catalogue (SecAgg, FastSecAgg, LightSecAgg, HE),
none with an official implementation, built on ``cryptography`` (X25519, HKDF,
AES-GCM, AES-CTR) and modular arithmetic, as protocols between simulated clients and
a server exchanging messages stage by stage:

- :mod:`~jgi.fl.secure.secagg`: Bonawitz et al. 2017 (semi-honest variant) and SecAgg+
  (Bell et al. 2020, sparse Harary neighbour graph).
- :mod:`~jgi.fl.secure.lightsecagg`: So et al. 2022, one-shot aggregate-mask
  reconstruction from Lagrange-coded mask shares over ``F_(2^31-1)``.
- :mod:`~jgi.fl.secure.he`: Phong et al. 2017, additive HE with TenSEAL CKKS or
  Paillier (``phe``), optional.
- :mod:`~jgi.fl.secure.fastsecagg`: FastSecAgg's cost model only (the reason is there).
- :mod:`~jgi.fl.secure.protocol`: the message interface, the simulated network,
  dropouts, the checks on every message, and the measured costs.
- :mod:`~jgi.fl.secure.quantize`: fixed-point encoding (Flower's SecAgg+ defaults).
- :mod:`~jgi.fl.secure.aggregate`: :func:`secure_sum`, one entry point for all schemes.
- :mod:`~jgi.fl.secure.fedavg`: FedAvg whose server learns only the sum.

Security caveats. This is a simulation for measuring what an attacker on the server
sees and what the protection costs, not audited cryptography; do not protect real data
with it:

- Only the semi-honest (honest-but-curious) server of Bonawitz et al. is modelled: no
  ConsistencyCheck round, no signatures or PKI, so a malicious server can lie about
  who dropped out and unmask a client (the client-side check that it never releases
  both shares of one client limits this only within one run). The server's
  Harary graph for SecAgg+ is trusted.
- All parties run in one process; "messages" are Python objects whose sizes are
  counted, not sent; timing side channels, memory hygiene (secrets stay in Python
  objects and are not zeroised) and constant-time arithmetic (Shamir and Lagrange
  code use Python integers and NumPy) are out of scope.
- A run with ``seed`` set derives every key, seed and nonce from that seed
  (reproducible, therefore not secret). ``seed=None`` uses ``os.urandom``.
- The HE key pair is shared by all clients (Phong et al.'s setting): a client that
  colludes with the server decrypts any other client's update.
- The sum itself is released to the server by design: what aggregation hides is each
  client's update, not what the sum of a few clients reveals (see
  ``docs/secure-aggregation.md`` for attacks on the aggregate).
"""

from jgi.fl.secure.aggregate import SCHEMES, SecureAggregation, SecureSum, secure_sum
from jgi.fl.secure.primitives import ProtocolError
from jgi.fl.secure.protocol import NO_DROPOUTS, Costs, Dropouts, Message, RunResult
from jgi.fl.secure.quantize import FLOWER_SECAGG_PLUS, Quantization

__all__ = ["Costs", "Dropouts", "FLOWER_SECAGG_PLUS", "Message", "NO_DROPOUTS",
           "ProtocolError", "Quantization", "RunResult", "SCHEMES", "SecureAggregation",
           "SecureSum", "secure_sum"]
