"""Shared fixtures: tiny shapes, CPU, the embedded sample unless real data are given."""

import os
from pathlib import Path

import pytest

from jgi import data

REFERENCE_DIR_CANDIDATES = [
    os.environ.get("JGI_DATA_DIR"),
    str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
]


@pytest.fixture(scope="session")
def reference_data_dir():
    """The folder with the reference .npz files, or skip the test when there is none."""
    for candidate in REFERENCE_DIR_CANDIDATES:
        if candidate and (Path(candidate) / "mnist.npz").is_file():
            return Path(candidate)
    pytest.skip("no reference data folder (set JGI_DATA_DIR)")


@pytest.fixture(scope="session")
def mnist_sample():
    """The embedded MNIST sample (always available, offline)."""
    return data.load("mnist", source="embedded")


@pytest.fixture(scope="session")
def cifar_sample():
    return data.load("cifar10", source="embedded")
