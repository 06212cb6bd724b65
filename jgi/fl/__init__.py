"""Federated-learning pieces: the IID client split, the victim set, the client update."""

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
from jgi.fl.split import FederatedSplit, iid_split, sample_victims

__all__ = [
    "ClientRandomness",
    "FederatedSplit",
    "per_example_gradients",
    "sample_randomness",
    "sample_victim_randomness",
    "client_loss",
    "client_update",
    "cross_entropy",
    "iid_split",
    "sample_victims",
    "victim_updates",
]
