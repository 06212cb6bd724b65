"""Federated split of a training set into IID clients, and the victim set.

Setting from the core paper (Scheliga et al., "Combining stochastic defenses ...",
section 5.1-5.2): 10 IID clients; each keeps 10% of its share for validation; the
victim set is 128 images sampled from the training data of one client.

Choices where the paper is silent:
- The split is a seeded permutation of the training set cut into ``num_clients`` equal
  shares; the ``N mod num_clients`` images left over are not assigned to any client, so
  that the client axis can be stacked and vmapped.
- Within a share, the first 90% (of the permuted order) are training data and the rest
  validation; ``n_val = round(share * val_fraction)``.
- Victims are drawn without replacement from the client's training part.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedSplit:
    """Indices into a dataset's training set, per client.

    Attributes:
      train_idx: int array (num_clients, n_train) of training indices per client.
      val_idx: int array (num_clients, n_val) of validation indices per client.
    """

    train_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def num_clients(self) -> int:
        return self.train_idx.shape[0]

    def capped(self, train: int | None, val: int | None) -> "FederatedSplit":
        """The first ``train`` / ``val`` indices of every client (None: all).

        Each client's share is already a random permutation, so its first indices are
        a random subset of it (the smoke preset trains on little data this way).
        """
        for name, value in (("train", train), ("val", val)):
            if value is not None and value < 1:
                raise ValueError(f"A cap on each client's {name} data must be >= 1 or None, "
                                 f"got {value}.")
        return FederatedSplit(train_idx=self.train_idx[:, :train], val_idx=self.val_idx[:, :val])


def iid_split(key: jax.Array, num_examples: int, num_clients: int = 10,
              val_fraction: float = 0.1) -> FederatedSplit:
    """Splits ``range(num_examples)`` into IID client shares.

    Args:
      key: PRNG key; the same key gives the same split.
      num_examples: size of the training set.
      num_clients: number of clients (paper: 10).
      val_fraction: fraction of each share kept for validation (paper: 0.1).

    Returns:
      A :class:`FederatedSplit`.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}.")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    share = num_examples // num_clients
    if share < 2:
        raise ValueError(
            f"{num_examples} training examples cannot be split over {num_clients} clients."
        )
    perm = np.asarray(jax.random.permutation(key, num_examples))
    shares = perm[: share * num_clients].reshape(num_clients, share)
    n_val = int(round(share * val_fraction))
    return FederatedSplit(train_idx=shares[:, : share - n_val], val_idx=shares[:, share - n_val:])


def sample_victims(key: jax.Array, split: FederatedSplit, num_victims: int = 128,
                   client: int = 0) -> np.ndarray:
    """Samples the victim set: indices into the training set, from one client.

    Args:
      key: PRNG key; the same key gives the same victims.
      split: the federated split.
      num_victims: number of victim images (paper: 128).
      client: which client is attacked.

    Returns:
      int array (num_victims,) of training-set indices.
    """
    if not 0 <= client < split.num_clients:
        raise ValueError(f"client must be in 0..{split.num_clients - 1}, got {client}.")
    pool = split.train_idx[client]
    if not 1 <= num_victims <= len(pool):
        raise ValueError(
            f"Cannot sample {num_victims} victims from client {client}, which holds "
            f"{len(pool)} training images; use between 1 and {len(pool)} victims or a "
            f"larger dataset (--data-dir)."
        )
    chosen = np.asarray(jax.random.choice(key, len(pool), (num_victims,), replace=False))
    return pool[chosen]
