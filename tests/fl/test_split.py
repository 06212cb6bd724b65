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
