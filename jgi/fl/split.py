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

The FedAvg leakage study (Zhu, Huang, Xie 2024, "Privacy attack in federated learning is
not easy", section IV-A) splits differently, in :class:`ClientShares` (clients of
unequal sizes): IID, "all training data are evenly and randomly allocated"
(:func:`iid_shares`), or non-IID, "each client is allocated a portion of the training
data for each label class based on a Dirichlet distribution, p ~ Dir(beta), where beta
= 0.5" (:func:`dirichlet_split`); "20% of the allocated data on each client is used for
testing, with the remaining 80% used for training". Choices where the study is silent:

- Dirichlet: for every class independently, proportions over the clients are drawn from
  Dir(beta * 1) and the class's (shuffled) examples are cut at the cumulative
  proportions, so every example goes to exactly one client. Draws in which a client
  gets fewer than ``min_size`` examples (default 10) are redrawn, the rule of the
  Dirichlet partition common in FL code (NIID-Bench, Li et al. 2022); the redraws use
  ``fold_in(key, attempt)``, so the split stays a function of the key.
- IID: a seeded permutation cut into ``num_clients`` shares whose sizes differ by at most
  one (``np.array_split``); no example is left out.
- Held-out part: each client's examples are shuffled and the last
  ``round(n * test_fraction)`` of them are its test set.
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


@dataclasses.dataclass(frozen=True, eq=False)
class ClientShares:
    """Indices into a dataset's training set per client; clients may differ in size.

    Attributes:
      train_idx: one int array of training indices per client.
      test_idx: one int array of held-out (test) indices per client.
    """

    train_idx: tuple[np.ndarray, ...]
    test_idx: tuple[np.ndarray, ...]

    def __post_init__(self):
        if len(self.train_idx) != len(self.test_idx) or not self.train_idx:
            raise ValueError(f"ClientShares needs one train and one test index array per "
                             f"client (at least one client), got {len(self.train_idx)} and "
                             f"{len(self.test_idx)}.")

    @property
    def num_clients(self) -> int:
        return len(self.train_idx)

    @property
    def sizes(self) -> np.ndarray:
        """Training examples per client (the FedAvg weights are proportional to them)."""
        return np.array([len(t) for t in self.train_idx])

    def label_counts(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """(num_clients, num_classes) counts of each client's training labels."""
        labels = np.asarray(labels)
        return np.stack([np.bincount(labels[t], minlength=num_classes)
                         for t in self.train_idx])

    def capped(self, train: int | None, test: int | None) -> "ClientShares":
        """The first ``train`` / ``test`` indices of every client (None: all); each
        client's indices are already in random order, so these are a random subset."""
        for name, value in (("train", train), ("test", test)):
            if value is not None and value < 1:
                raise ValueError(f"A cap on each client's {name} data must be >= 1 or None, "
                                 f"got {value}.")
        return ClientShares(tuple(t[:train] for t in self.train_idx),
                            tuple(t[:test] for t in self.test_idx))

    @staticmethod
    def from_split(split: FederatedSplit) -> "ClientShares":
        """The same clients as an equal-sized :class:`FederatedSplit` (validation as test)."""
        return ClientShares(tuple(split.train_idx), tuple(split.val_idx))


def _hold_out(key: jax.Array, shares: list[np.ndarray], test_fraction: float) -> ClientShares:
    train, test = [], []
    # One uniform draw per dataset index orders every client's share (one jax call, not
    # a permutation compiled for each client's size).
    order = _random_order(key, max(int(s.max()) + 1 if len(s) else 0 for s in shares))
    for c, share in enumerate(shares):
        share = share[np.argsort(order[share], kind="stable")]
        n_test = int(round(len(share) * test_fraction))
        if len(share) - n_test < 1:
            raise ValueError(f"Client {c} holds {len(share)} examples; keeping "
                             f"{test_fraction:.0%} for testing leaves none to train on. Use "
                             "fewer clients, more data or a smaller test_fraction.")
        train.append(share[: len(share) - n_test])
        test.append(share[len(share) - n_test:])
    return ClientShares(tuple(train), tuple(test))


def _random_order(key: jax.Array, n: int) -> np.ndarray:
    """A random key per index 0..n-1; sorting any subset by it shuffles the subset."""
    return np.asarray(jax.random.uniform(key, (n,)))


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1) (the study: 0.2), got "
                         f"{test_fraction}.")


def iid_shares(key: jax.Array, num_examples: int, num_clients: int = 10,
               test_fraction: float = 0.2) -> ClientShares:
    """The study's IID split: every example to one client, shares differing by <= 1.

    Args:
      key: PRNG key; the same key gives the same split.
      num_examples: size of the training set.
      num_clients: number of clients (the study: 10 or 100).
      test_fraction: each client's held-out fraction (the study: 0.2).
    """
    _check_fraction(test_fraction)
    if not 1 <= num_clients <= num_examples:
        raise ValueError(f"num_clients must be in 1..{num_examples} (one example each at "
                         f"least), got {num_clients}.")
    k_perm, k_hold = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(k_perm, num_examples))
    return _hold_out(k_hold, np.array_split(perm, num_clients), test_fraction)


def dirichlet_split(key: jax.Array, labels: np.ndarray, num_clients: int = 10,
                    beta: float = 0.5, test_fraction: float = 0.2, min_size: int = 10,
                    max_attempts: int = 100) -> ClientShares:
    """The study's non-IID split: per class, proportions over clients ~ Dir(beta).

    Args:
      key: PRNG key; the same key (and labels) gives the same split.
      labels: int labels of the training set (N,).
      num_clients: number of clients (the study: 10 or 100).
      beta: the Dirichlet concentration (the study: 0.5); smaller is more skewed.
      test_fraction: each client's held-out fraction (the study: 0.2).
      min_size: fewest examples a client may get; draws below it are redrawn.
      max_attempts: redraws before giving up.

    Returns:
      :class:`ClientShares`; every example is in exactly one client's train or test part.
    """
    _check_fraction(test_fraction)
    if not beta > 0:
        raise ValueError(f"The Dirichlet concentration beta must be > 0 (the study: 0.5), "
                         f"got {beta}.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D int array, got {labels.dtype} of shape "
                         f"{labels.shape}.")
    if num_clients < 1 or num_clients * min_size > len(labels):
        raise ValueError(f"{len(labels)} examples cannot give {num_clients} clients "
                         f"min_size={min_size} examples each; use fewer clients or a "
                         "smaller min_size.")
    k_dir, k_perm, k_hold = jax.random.split(key, 3)
    classes = np.unique(labels)
    order = _random_order(k_perm, len(labels))
    by_class = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        by_class.append(idx[np.argsort(order[idx], kind="stable")])
    for attempt in range(max_attempts):
        props = np.asarray(jax.random.dirichlet(jax.random.fold_in(k_dir, attempt),
                                                np.full(num_clients, beta, np.float32),
                                                (len(classes),)), np.float64)
        parts = [[] for _ in range(num_clients)]
        for idx, p in zip(by_class, props, strict=True):
            cuts = (np.cumsum(p / p.sum())[:-1] * len(idx)).astype(int)
            for client, piece in enumerate(np.split(idx, cuts)):
                parts[client].append(piece)
        shares = [np.concatenate(p) for p in parts]
        if min(len(s) for s in shares) >= min_size:
            return _hold_out(k_hold, shares, test_fraction)
    raise ValueError(f"No Dirichlet(beta={beta}) draw in {max_attempts} attempts gave every "
                     f"one of {num_clients} clients at least {min_size} of {len(labels)} "
                     "examples; raise beta or max_attempts, or lower min_size or the number "
                     "of clients.")
