import jax
import numpy as np
import pytest

from jgi import fl


def test_iid_split_is_a_disjoint_partition_with_validation():
    split = fl.iid_split(jax.random.key(0), 1003, num_clients=10, val_fraction=0.1)
    assert split.train_idx.shape == (10, 90) and split.val_idx.shape == (10, 10)
    everything = np.concatenate([split.train_idx.ravel(), split.val_idx.ravel()])
    assert len(np.unique(everything)) == 1000  # disjoint; 3 left over
    assert everything.min() >= 0 and everything.max() < 1003


def test_paper_sizes_for_mnist_and_cifar():
    # Section 5.1: 5,400 / 600 per client on MNIST, 4,500 / 500 on CIFAR-10.
    mnist = fl.iid_split(jax.random.key(1), 60000)
    cifar = fl.iid_split(jax.random.key(1), 50000)
    assert mnist.train_idx.shape == (10, 5400) and mnist.val_idx.shape == (10, 600)
    assert cifar.train_idx.shape == (10, 4500) and cifar.val_idx.shape == (10, 500)


def test_same_seed_same_split_and_victims_different_seed_different():
    a = fl.iid_split(jax.random.key(3), 2000)
    b = fl.iid_split(jax.random.key(3), 2000)
    c = fl.iid_split(jax.random.key(4), 2000)
    np.testing.assert_array_equal(a.train_idx, b.train_idx)
    assert not np.array_equal(a.train_idx, c.train_idx)
    va = fl.sample_victims(jax.random.key(5), a, 128)
    vb = fl.sample_victims(jax.random.key(5), b, 128)
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(va, fl.sample_victims(jax.random.key(6), a, 128))


def test_victims_come_from_one_clients_training_share_without_repeats():
    split = fl.iid_split(jax.random.key(0), 2000)
    victims = fl.sample_victims(jax.random.key(1), split, 128, client=3)
    assert len(np.unique(victims)) == 128
    assert np.isin(victims, split.train_idx[3]).all()
    assert not np.isin(victims, split.val_idx[3]).any()


def test_bad_requests_say_what_would_be_right():
    split = fl.iid_split(jax.random.key(0), 200)
    with pytest.raises(ValueError, match="between 1 and 18"):
        fl.sample_victims(jax.random.key(1), split, 128)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        fl.sample_victims(jax.random.key(1), split, 4, client=10)
    with pytest.raises(ValueError, match="cannot be split"):
        fl.iid_split(jax.random.key(0), 5)


def _labels(n=3000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def _label_skew(shares, labels, classes=10):
    """Mean total-variation distance of the clients' label mixes from the global one."""
    counts = shares.label_counts(labels, classes).astype(float)
    mix = counts / counts.sum(1, keepdims=True)
    overall = np.bincount(labels, minlength=classes) / len(labels)
    return float(np.mean(0.5 * np.abs(mix - overall).sum(1)))


def test_dirichlet_split_is_seeded_and_covers_every_example_once():
    labels = _labels()
    a = fl.dirichlet_split(jax.random.key(0), labels, num_clients=10, beta=0.5)
    b = fl.dirichlet_split(jax.random.key(0), labels, num_clients=10, beta=0.5)
    c = fl.dirichlet_split(jax.random.key(1), labels, num_clients=10, beta=0.5)
    for x, y in zip(a.train_idx + a.test_idx, b.train_idx + b.test_idx, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.sizes, c.sizes)
    everything = np.concatenate(a.train_idx + a.test_idx)
    assert len(everything) == len(labels) and len(np.unique(everything)) == len(labels)
    assert len(set(a.sizes)) > 1 and a.sizes.min() >= 8  # unequal; min_size 10 before holding out


def test_label_skew_grows_as_beta_falls():
    labels = _labels()
    skew = [np.mean([_label_skew(fl.dirichlet_split(jax.random.key(s), labels, 10, beta), labels)
                     for s in range(3)]) for beta in (100.0, 0.5, 0.1)]
    iid = _label_skew(fl.iid_shares(jax.random.key(0), len(labels), 10), labels)
    # Measured: IID 0.07, beta 100: 0.05, 0.5: 0.49, 0.1: 0.71 (3000 labels, 10 clients).
    assert iid < 0.1 and skew[0] < 0.1
    assert skew[0] + 0.2 < skew[1] and skew[1] + 0.1 < skew[2]


def test_each_client_holds_out_twenty_percent():
    labels = _labels(1000)
    shares = fl.dirichlet_split(jax.random.key(2), labels, num_clients=5, beta=0.5)
    for train, test in zip(shares.train_idx, shares.test_idx, strict=True):
        n = len(train) + len(test)
        assert len(test) == round(0.2 * n) and not np.isin(test, train).any()
    iid = fl.iid_shares(jax.random.key(0), 1003, num_clients=10, test_fraction=0.2)
    assert sorted(set(len(t) + len(s) for t, s in zip(iid.train_idx, iid.test_idx,
                                                      strict=True))) == [100, 101]
    assert [len(t) for t in iid.test_idx] == [20] * 10
    assert len(np.unique(np.concatenate(iid.train_idx + iid.test_idx))) == 1003


def test_study_split_errors_say_what_would_be_right():
    with pytest.raises(ValueError, match="beta must be > 0"):
        fl.dirichlet_split(jax.random.key(0), _labels(100), 2, beta=0.0)
    with pytest.raises(ValueError, match="min_size=10"):
        fl.dirichlet_split(jax.random.key(0), _labels(100), 11)
    with pytest.raises(ValueError, match="raise beta"):
        fl.dirichlet_split(jax.random.key(0), _labels(200), 10, beta=0.01, min_size=19,
                           max_attempts=3)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fl.iid_shares(jax.random.key(0), 100, 2, test_fraction=1.0)
