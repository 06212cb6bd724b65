"""Shared fixtures: tiny shapes, CPU, the embedded sample unless real data are given."""

import os
import shutil
import tempfile
from pathlib import Path

# Most tests compile a program to run it a few steps, where XLA's optimisation passes
# cost more than they save: without them the suite takes about 30% less time and every
# test passes alike. Set before jax is imported: jit's cache does not key on the flag, so
# toggling it later would not recompile what a process has already compiled; the
# subprocesses of tests/attacks/test_multidevice.py inherit it too.
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite optimised, as users run the library
# (it passes that way too).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# One persistent compilation cache for the whole run, shared by the pytest-xdist workers
# and the subprocesses of the command-line tests: the controller makes it before the
# workers start, and they and every subprocess inherit the environment, so the same
# program compiled in several processes is compiled once. Measured on 2 cores on a tenth
# of the suite from a cold cache: 46 s instead of 51 s. The controller removes it at
# the end; a JAX_COMPILATION_CACHE_DIR set by the caller is used and left alone.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="jgi-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

from jgi import data  # noqa: E402

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


def pytest_sessionfinish(session, exitstatus):
    """The process that made the run's compilation cache (the controller) removes it."""
    del session, exitstatus
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
