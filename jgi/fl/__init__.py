"""Federated-learning pieces: the client update, local training, what the server observes.

- :mod:`~jgi.fl.client`: one defended step, ``(params, batch, randomness) -> update``.
- :mod:`~jgi.fl.local`: a client's local training (:class:`LocalTraining`), whole or in
  :class:`Piece` s of local steps (:func:`local_pieces`, :func:`make_local_piece`).
- :mod:`~jgi.fl.observation`: the server's :class:`Observation` of a client.
- :mod:`~jgi.fl.fedavg`: federated averaging over clients (model utility).
- :mod:`~jgi.fl.federation`: the FedAvg leakage study's federation (Dirichlet clients of
  unequal sizes, SGD with lr decay, held-out accuracy) with a server-side attack hook.
- :mod:`~jgi.fl.split`: the IID split and the victim set; the study's IID and
  Dirichlet(beta) splits with a held-out part per client (:class:`ClientShares`).
"""

from jgi.fl.client import (
    ClientRandomness,
    client_loss,
    client_update,
    cross_entropy,
    per_example_gradients,
    sample_randomness,
    sample_victim_randomness,
    victim_updates,
)
from jgi.fl.local import (ONE_STEP, LocalTraining, Piece, local_pieces, make_local_piece,
                          make_local_training)
from jgi.fl.observation import Observation, observe, observe_victims
from jgi.fl.split import (ClientShares, FederatedSplit, dirichlet_split, iid_shares, iid_split,
                          sample_victims)

__all__ = [
    "ClientRandomness",
    "ClientShares",
    "LocalTraining",
    "ONE_STEP",
    "Observation",
    "Piece",
    "local_pieces",
    "make_local_piece",
    "make_local_training",
    "observe",
    "observe_victims",
    "FederatedSplit",
    "per_example_gradients",
    "sample_randomness",
    "sample_victim_randomness",
    "client_loss",
    "client_update",
    "cross_entropy",
    "dirichlet_split",
    "iid_shares",
    "iid_split",
    "sample_victims",
    "victim_updates",
]
