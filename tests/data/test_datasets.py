import os

import numpy as np
import pytest

from jgi import data
from jgi.data import datasets


def _check_dataset(ds, shape):
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.x_train.shape[1:] == shape and ds.x_test.shape[1:] == shape
    assert len(ds.x_train) == len(ds.y_train) and len(ds.x_test) == len(ds.y_test)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.x_train.max() == 1.0  # real images reach full intensity
    assert set(np.unique(ds.y_train)) == set(range(10))


def test_embedded_samples_are_real_images(mnist_sample, cifar_sample):
    _check_dataset(mnist_sample, (28, 28, 1))
    _check_dataset(cifar_sample, (32, 32, 3))
    assert mnist_sample.source == "embedded"
    # First official MNIST training labels (5, 0, 4, 1, 9, 2, 1, 3, 1, 4): real data, in order.
    np.testing.assert_array_equal(mnist_sample.y_train[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    # First official CIFAR-10 training labels: frog, truck, truck, deer, automobile.
    np.testing.assert_array_equal(cifar_sample.y_train[:5], [6, 9, 9, 4, 1])
    # Real digits are mostly background: the embedded mean is close to the published one.
    assert abs(mnist_sample.x_train.mean() - 0.1307) < 0.01


def test_embedded_sample_matches_reference_file(reference_data_dir, mnist_sample):
    full = data.load("mnist", data_dir=reference_data_dir, verify=False)
    n = len(mnist_sample.y_train)
    np.testing.assert_array_equal(full.x_train[:n], mnist_sample.x_train)
    np.testing.assert_array_equal(full.y_test[:len(mnist_sample.y_test)], mnist_sample.y_test)


def test_reference_files_load_and_verify(reference_data_dir):
    ds = data.load("mnist", data_dir=reference_data_dir)
    assert ds.source == "dir" and ds.x_train.shape == (60000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [980, 1135, 1032, 1010, 982, 892,
                                                           958, 1028, 974, 1009])


def test_data_dir_from_environment(reference_data_dir, monkeypatch):
    monkeypatch.setenv("JGI_DATA_DIR", str(reference_data_dir))
    assert data.load("mnist", verify=False).source == "dir"


def _write_fake_mnist(folder, **overrides):
    arrays = {"x_train": np.zeros((20, 28, 28), np.uint8), "y_train": np.arange(20) % 10,
              "x_test": np.zeros((5, 28, 28), np.uint8), "y_test": np.arange(5)}
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(folder / "mnist.npz", **arrays)
    return folder / "mnist.npz"


def test_corrupt_reference_file_is_refused(tmp_path):
    path = _write_fake_mnist(tmp_path)
    with pytest.raises(data.DataError) as err:
        data.load("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "sha256" in msg
    assert datasets.DATASETS["mnist"].sha256 in msg  # what was expected
    assert "--data-source=embedded" in msg  # the options


def test_unverified_file_with_wrong_shape_names_key_and_shapes(tmp_path):
    _write_fake_mnist(tmp_path, x_train=np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(data.DataError, match=r"x_train.*\(N, 28, 28, 1\).*\(20, 32, 32, 1\)"):
        data.load("mnist", data_dir=tmp_path, verify=False)


def test_missing_key_is_named(tmp_path):
    _write_fake_mnist(tmp_path, y_test=None)
    with pytest.raises(data.DataError, match="y_test"):
        data.load("mnist", data_dir=tmp_path, verify=False)


def test_truncated_file_is_reported(tmp_path):
    path = _write_fake_mnist(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(data.DataError, match="could not be read"):
        data.load("mnist", data_dir=tmp_path, verify=False)


def test_missing_file_and_missing_directory(tmp_path):
    with pytest.raises(data.DataError, match=r"mnist\.npz does not exist"):
        data.load("mnist", data_dir=tmp_path)
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("mnist", data_dir=tmp_path / "nope")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(data.DataError, match="cifar10, mnist"):
        data.load("imagenet")
    with pytest.raises(data.DataError, match="auto, dir, tfds, embedded"):
        data.load("mnist", source="s3")


def test_bad_labels_are_refused(tmp_path):
    _write_fake_mnist(tmp_path, y_train=np.full(20, 12))
    with pytest.raises(data.DataError, match=r"0\.\.9"):
        data.load("mnist", data_dir=tmp_path, verify=False)


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=7):
        ds = data.load("mnist", source="tfds", download=False)
    assert ds.source == "tfds"
    assert ds.x_train.shape == (7, 28, 28, 1) and ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.y_train.dtype == np.int32


def test_auto_falls_back_to_embedded_when_tfds_fails_and_says_why_in_one_line(monkeypatch,
                                                                               caplog):
    monkeypatch.delenv("JGI_DATA_DIR", raising=False)

    def offline(info, download=True):
        raise data.DataError("tensorflow-datasets could not provide 'mnist' (offline).")

    monkeypatch.setattr(datasets, "load_tfds", offline)
    with caplog.at_level("WARNING"):
        ds = data.load("mnist")
    assert ds.source == "embedded"
    assert ds.skipped == ("tfds (tensorflow-datasets could not provide 'mnist' (offline))",)
    line = ds.describe()
    assert "\n" not in line and line.startswith("mnist from embedded")
    assert line.endswith("skipped tfds (tensorflow-datasets could not provide 'mnist' "
                         "(offline))")
    assert not caplog.records  # no warnings: the one line says it


def test_an_unprepared_tfds_copy_is_skipped_without_third_party_warnings(monkeypatch,
                                                                         tmp_path, capfd):
    """Offline with an empty tfds folder (as on a fresh machine): one reason, no absl noise."""
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("JGI_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "tfds_server_reachable", lambda: False)
    ds = data.load("mnist")
    assert ds.source == "embedded" and len(ds.skipped) == 1
    assert ds.skipped[0].startswith("tfds (")
    err = capfd.readouterr().err
    assert "Variant folder" not in err and "WARNING" not in err


def test_normalisation_round_trip_and_bounds(mnist_sample):
    info = mnist_sample.info
    x = mnist_sample.x_train[:4]
    np.testing.assert_allclose(data.denormalize(data.normalize(x, info), info), x, atol=1e-6)
    lower, upper = data.input_bounds(info)
    z = data.normalize(x, info)
    assert np.all(z >= lower - 1e-6) and np.all(z <= upper + 1e-6)


def test_no_hidden_download_folder_needed(tmp_path, monkeypatch):
    # The embedded source never touches the network or the tfds folder.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    data.load("cifar10", source="embedded")
    assert not os.listdir(tmp_path)


def test_auto_does_not_download_when_the_tfds_server_is_unreachable(monkeypatch):
    # Offline, tfds would retry every file for minutes before the embedded fallback.
    monkeypatch.delenv("JGI_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "tfds_server_reachable", lambda timeout=3.0: False)
    calls = []

    def fake_tfds(info, download=True):
        calls.append(download)
        raise data.DataError("tensorflow-datasets could not provide 'mnist' (not prepared).")

    monkeypatch.setattr(datasets, "load_tfds", fake_tfds)
    assert data.load("mnist").source == "embedded"
    assert calls == [False]


def test_the_authors_layout_is_32x32x3_in_range_and_bilinear(mnist_sample, cifar_sample):
    x = mnist_sample.x_train[:4]
    y = data.layout_images(x, "authors")
    assert y.shape == (4, 32, 32, 3) and y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0 and y.max() > 0.9  # real digits stay bright
    np.testing.assert_array_equal(y[..., 0], y[..., 2])  # grey repeated over 3 channels
    assert abs(float(y.mean()) - float(x.mean())) < 0.01  # upsampling keeps the mean
    # half-pixel bilinear: output pixel 1 of 32 sits at 0.8125 of the way to input 1
    ramp = np.tile(np.arange(28, dtype=np.float32)[None, :, None], (28, 1, 1))[None] / 27
    out = data.layout_images(ramp, "authors")[0, 0, :, 0]
    np.testing.assert_allclose(out[:3] * 27, [0.0, 0.8125, 1.6875], atol=1e-5)
    np.testing.assert_array_equal(data.layout_images(x, "jgi"), x)
    info = data.layout_info(mnist_sample.info, "authors")
    assert info.image_shape == (32, 32, 3) and info.mean == mnist_sample.info.mean * 3
    assert data.apply_layout(cifar_sample, "authors") is cifar_sample  # already 32x32x3
    with pytest.raises(data.DataError, match="Unknown layout 'torch'.*jgi, authors"):
        data.layout_images(x, "torch")
