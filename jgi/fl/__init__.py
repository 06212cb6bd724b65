"""Federated-learning pieces: the IID client split, the victim set, the client update."""

from jgi.fl.client import client_loss, client_update, cross_entropy, victim_updates
from jgi.fl.split import FederatedSplit, iid_split, sample_victims

__all__ = [
    "FederatedSplit",
    "client_loss",
    "client_update",
    "cross_entropy",
    "iid_split",
    "sample_victims",
    "victim_updates",
]
