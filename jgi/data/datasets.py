"""Dataset registry and the three loaders (local npz, tensorflow-datasets, embedded)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

SOURCES = ("auto", "dir", "tfds", "embedded")
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


class DataError(ValueError):
    """A dataset could not be found, verified or understood."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What jgi knows about a dataset before loading it.

    Attributes:
        name: jgi's name for it (the key of :data:`DATASETS`).
        image_shape: (height, width, channels) of one image.
        num_classes: number of labels.
        mean, std: per-channel statistics of the full official training set, in [0, 1]
            units. Models see ``(x - mean) / std``.
        file_name: name of the reference ``.npz`` file in a data directory.
        sha256: published digest of that file (from ``shared/data/README.md``).
        keys: npz keys for (x_train, y_train, x_test, y_test).
        tfds_name: the tensorflow-datasets name, or None when tfds has no such dataset.
        citation: what to cite.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    file_name: str
    sha256: str
    keys: tuple[str, str, str, str]
    tfds_name: str | None
    citation: str


DATASETS: dict[str, DatasetInfo] = {
        "mnist": DatasetInfo(
                name="mnist",
                image_shape=(28, 28, 1),
                num_classes=10,
                mean=(0.1306604762738429,),
                std=(0.30810780385646264,),
                file_name="mnist.npz",
                sha256="06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
                keys=("x_train", "y_train", "x_test", "y_test"),
                tfds_name="mnist",
                citation="LeCun, Bottou, Bengio, Haffner (1998), Proc. IEEE 86(11).",
        ),
        "cifar10": DatasetInfo(
                name="cifar10",
                image_shape=(32, 32, 3),
                num_classes=10,
                mean=(0.491399679, 0.482158408, 0.446530914),
                std=(0.247032232, 0.243485128, 0.261587842),
                file_name="cifar10.npz",
                sha256="2ba816b78487939bfa79940e453a56674cbdd094f239e3a0e52f1eff9392457a",
                keys=("x_train", "y_train", "x_test", "y_test"),
                tfds_name="cifar10",
                citation="Krizhevsky (2009), Learning Multiple Layers of Features from Tiny "
                         "Images.",
        ),
        "pneumoniamnist": DatasetInfo(
                name="pneumoniamnist",
                image_shape=(28, 28, 1),
                num_classes=2,
                mean=(0.5719215617427941,),
                std=(0.16835126265604494,),
                file_name="pneumoniamnist.npz",
                sha256="e1792d3f03751cb101e99f19a63b3c1941436c988665f47853417b05be250cd8",
                keys=("train_images", "train_labels", "test_images", "test_labels"),
                tfds_name=None,
                citation="Yang et al. (2023), MedMNIST v2, Scientific Data 10, 41.",
        ),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset.

    Attributes:
        info: the :class:`DatasetInfo`.
        x_train, x_test: float32 arrays (N, H, W, C) with values in [0, 1].
        y_train, y_test: int32 arrays (N,).
        source: where the arrays came from ("dir", "tfds" or "embedded").
        origin: a path or dataset name that says exactly which files were read.
        skipped: for ``source="auto"``, why each source tried before this one was
            skipped (one short reason each).
    """

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    origin: str
    skipped: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.info.name

    def describe(self) -> str:
        """One line: the source used, its files, sizes, and why earlier sources were skipped."""
        line = (f"{self.name} from {self.source} ({self.origin}): "
                f"{len(self.y_train)} train / {len(self.y_test)} test images of shape "
                f"{self.x_train.shape[1:]}")
        if self.skipped:
            line += f"; skipped {'; '.join(self.skipped)}"
        return line


def _unknown_name(name: str) -> DataError:
    return DataError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(sorted(DATASETS))}."
    )


def _to_float_images(images: np.ndarray, info: DatasetInfo, where: str) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> float32 (N, H, W, C) in [0, 1], with shape checks."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or tuple(images.shape[1:]) != info.image_shape:
        raise DataError(
                f"{where}: expected images of shape (N, {', '.join(map(str, info.image_shape))})"
                f" for {info.name}, got {images.shape}."
        )
    if images.dtype != np.uint8:
        raise DataError(
                f"{where}: expected uint8 pixels 0..255 as in the reference files, got "
                f"{images.dtype}."
        )
    return images.astype(np.float32) / np.float32(255.0)


def _to_labels(labels: np.ndarray, n: int, info: DatasetInfo, where: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1).astype(np.int32)
    if labels.shape[0] != n:
        raise DataError(f"{where}: {labels.shape[0]} labels for {n} images.")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(
                f"{where}: labels must lie in 0..{info.num_classes - 1}, found "
                f"{labels.min()}..{labels.max()}."
        )
    return labels


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _options_hint(info: DatasetInfo) -> str:
    return (
            f"Options: point --data-dir / JGI_DATA_DIR at a folder holding an intact "
            f"{info.file_name}; use --data-source=tfds when online; or "
            f"--data-source=embedded for the small sample shipped with jgi."
    )


def load_npz(path: str | os.PathLike, info: DatasetInfo, *, verify: bool = True,
                          source: str = "dir") -> Dataset:
    """Loads one dataset from an ``.npz`` file in the reference format.

    Args:
        path: the file.
        info: which dataset it holds (decides the expected keys and shapes).
        verify: compare the sha256 with the published digest when the file carries the
            reference name.
        source: recorded in the returned dataset.

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: the file is missing, corrupt, or does not hold what ``info`` says.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
                f"Dataset file {path} does not exist. Expected {info.file_name} in the reference "
                f"format (keys {', '.join(info.keys)}). " + _options_hint(info)
        )
    if verify and path.name == info.file_name:
        actual = sha256_of(path)
        if actual != info.sha256:
            raise DataError(
                    f"Dataset file {path} is corrupt or not the reference file: sha256 is "
                    f"{actual}, "
                    f"expected {info.sha256}. " + _options_hint(info)
                    + " If you modified the file on purpose, pass verify=False (--no-verify)."
            )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in info.keys if k not in archive.files]
            if missing:
                raise DataError(
                        f"Dataset file {path} lacks the key(s) {missing}; expected "
                        f"{list(info.keys)}, found {archive.files}. " + _options_hint(info)
                )
            arrays = {k: archive[k] for k in info.keys}
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, EOFError ...
        raise DataError(
                f"Dataset file {path} could not be read as .npz ({type(e).__name__}: {e}). "
                + _options_hint(info)
        ) from e
    kx, ky, kxt, kyt = info.keys
    x_train = _to_float_images(arrays[kx], info, f"{path}[{kx}]")
    x_test = _to_float_images(arrays[kxt], info, f"{path}[{kxt}]")
    return Dataset(
            info=info,
            x_train=x_train,
            y_train=_to_labels(arrays[ky], len(x_train), info, f"{path}[{ky}]"),
            x_test=x_test,
            y_test=_to_labels(arrays[kyt], len(x_test), info, f"{path}[{kyt}]"),
            source=source,
            origin=str(path),
    )


def _tfds_split(tfds, info: DatasetInfo, split: str, download: bool):
    source = tfds.data_source(info.tfds_name, split=split, download=download)
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"]) for r in records]) if records else np.zeros(
            (0, *info.image_shape), np.uint8)
    labels = np.asarray([r["label"] for r in records], np.int64)
    return images, labels


@contextlib.contextmanager
def _quiet_third_party_logs():
    """Keeps absl's and tensorflow-datasets' warnings (e.g. "Variant folder ... has no
    dataset_info.json" offline) off the console; their failures still raise, and
    :func:`load` reports them in one line."""
    loggers = [logging.getLogger(n) for n in ("absl", "tensorflow_datasets", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def load_tfds(info: DatasetInfo, *, download: bool = True) -> Dataset:
    """Loads a dataset through tensorflow-datasets' random-access ``data_source``.

    Raises:
        DataError: tfds has no such dataset, or it could not be prepared (offline, or
            missing the packages tfds needs to build it).
    """
    if info.tfds_name is None:
        raise DataError(
                f"{info.name} is not available through tensorflow-datasets in jgi; use "
                f"--data-dir with {info.file_name}."
        )
    try:
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise DataError(f"tensorflow-datasets is not importable: {e}") from e
    try:
        with _quiet_third_party_logs():
            x_train, y_train = _tfds_split(tfds, info, "train", download)
            x_test, y_test = _tfds_split(tfds, info, "test", download)
    except Exception as e:
        raise DataError(
                f"tensorflow-datasets could not provide {info.tfds_name!r} "
                f"({type(e).__name__}: {str(e)[:200]}). " + _options_hint(info)
        ) from e
    x_train = _to_float_images(x_train, info, f"tfds:{info.tfds_name}/train")
    x_test = _to_float_images(x_test, info, f"tfds:{info.tfds_name}/test")
    return Dataset(
            info=info,
            x_train=x_train,
            y_train=_to_labels(y_train, len(x_train), info, "tfds train labels"),
            x_test=x_test,
            y_test=_to_labels(y_test, len(x_test), info, "tfds test labels"),
            source="tfds",
            origin=f"tfds:{info.tfds_name}",
    )


def embedded_path(info: DatasetInfo) -> Path:
    return EMBEDDED_DIR / f"{info.name}_sample.npz"


def load_embedded(info: DatasetInfo) -> Dataset:
    """Loads the small real-image sample shipped inside the package."""
    path = embedded_path(info)
    if not path.is_file():
        available = sorted(p.name for p in EMBEDDED_DIR.glob("*_sample.npz"))
        raise DataError(
                f"No embedded sample for {info.name} (looked for {path}); embedded samples "
                f"exist for: {available}. Use --data-dir with {info.file_name}."
        )
    return load_npz(path, info, verify=False, source="embedded")


TFDS_SERVER = ("storage.googleapis.com", 443)


def tfds_server_reachable(timeout: float = 3.0) -> bool:
    """Whether the server tensorflow-datasets downloads from accepts a connection."""
    import socket  # pylint: disable=g-import-not-at-top
    try:
        with socket.create_connection(TFDS_SERVER, timeout=timeout):
            return True
    except OSError:
        return False


def load(name: str, *, data_dir: str | os.PathLike | None = None, source: str = "auto",
                  verify: bool = True, download: bool = True) -> Dataset:
    """Loads a dataset by name.

    Args:
        name: one of :data:`DATASETS` ("mnist", "cifar10", "pneumoniamnist").
        data_dir: folder holding ``<name>.npz``; defaults to ``$JGI_DATA_DIR``.
        source: "auto" (data_dir if given, else tfds, else the embedded sample), or
            exactly one of "dir", "tfds", "embedded". In "auto", tfds downloads only
            when its server is reachable; otherwise only already prepared data is used.
        verify: check reference files against their published sha256.
        download: let tensorflow-datasets download when the data are not prepared.

    Returns:
        A :class:`Dataset`; ``dataset.describe()`` says which source was used.

    Raises:
        DataError: with the file, the expectation and the options in the message.
    """
    info = DATASETS.get(name)
    if info is None:
        raise _unknown_name(name)
    if source not in SOURCES:
        raise DataError(f"Unknown data source {source!r}. Valid sources: {', '.join(SOURCES)}.")
    if data_dir is None and os.environ.get("JGI_DATA_DIR"):
        data_dir = os.environ["JGI_DATA_DIR"]

    if source == "dir" or (source == "auto" and data_dir is not None):
        if data_dir is None:
            raise DataError(
                    "--data-source=dir needs a folder: pass --data-dir or set JGI_DATA_DIR."
            )
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(
                    f"Data directory {data_dir} does not exist (from --data-dir or JGI_DATA_DIR). "
                    + _options_hint(info)
            )
        return load_npz(data_dir / info.file_name, info, verify=verify)
    if source == "tfds":
        return load_tfds(info, download=download)
    if source == "embedded":
        return load_embedded(info)

    # auto, no data directory: tfds first (downloading only when its server answers:
    # offline, tfds would retry each file for minutes), then the embedded sample.
    attempts: list[tuple[str, Callable[[], Dataset]]] = []
    if info.tfds_name is not None:
        attempts.append(("tfds", lambda: load_tfds(
            info, download=download and tfds_server_reachable())))
    attempts.append(("embedded", lambda: load_embedded(info)))
    errors, skipped = [], []
    for label, attempt in attempts:
        try:
            dataset = attempt()
        except DataError as e:
            reason = str(e).split(" Options:")[0]
            logger.info("jgi.data: %s; trying the next source.", reason)
            skipped.append(f"{label} ({_short_reason(reason)})")
            errors.append(f"{label}: {e}")
            continue
        return dataclasses.replace(dataset, skipped=tuple(skipped))
    raise DataError(f"No source could provide {name}:\n  " + "\n  ".join(errors))


def _short_reason(reason: str) -> str:
    """The gist of a loader's error for the one-line summary (at most ~100 characters)."""
    if "tensorflow-datasets could not provide" in reason and (
            "splits" in reason or "not been generated" in reason or "dataset_info" in reason):
        return "no prepared copy on this machine and no download"
    reason = reason.rstrip(". ")
    return reason if len(reason) <= 100 else reason[:97] + "..."


# --- Layouts: how images are shaped for the models ------------------------------------

LAYOUTS = ("jgi", "authors")
AUTHORS_SIDE = 32


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bilinear resizing with half-pixel centres, the
    source coordinate clamped at the edges (PyTorch's ``align_corners=False``; for
    upsampling, torchvision's ``Resize`` antialiasing changes nothing). Each row is a
    convex combination of at most two inputs, so values stay in the input's range."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1.0 - frac
    m[np.arange(n_out), hi] += frac
    return m


def layout_images(x: np.ndarray, layout: str) -> np.ndarray:
    """Images (N, H, W, C) in [0, 1] in ``layout``.

    ``"jgi"``: unchanged (MNIST 28x28x1, CIFAR-10 32x32x3). ``"authors"``: the layout
    of the ablation paper's authors' code (AUTHORS-CODE.md: victim folder
    ``MNIST3C32``, data config ``shape: [3, 32, 32]``, ``Resize`` then
    ``Grayscale_to_RGB``): resized bilinearly to 32x32 when they are not (see
    :func:`_bilinear_matrix`), grey images repeated over 3 channels; CIFAR-10 is
    already in it. Returns float32 (N, 32, 32, 3) in [0, 1] for "authors".

    Raises:
      DataError: an unknown layout, or images that are not (N, H, W, 1 or 3).
    """
    if layout not in LAYOUTS:
        raise DataError(f"Unknown layout {layout!r}; valid: {', '.join(LAYOUTS)} (jgi: the "
                        "native shapes; authors: 32x32x3 as the paper's authors ran it).")
    x = np.asarray(x, np.float32)
    if layout == "jgi":
        return x
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"layout 'authors' expects images (N, H, W, 1 or 3), got {x.shape}.")
    _, h, w, _ = x.shape
    if (h, w) != (AUTHORS_SIDE, AUTHORS_SIDE):
        rows = _bilinear_matrix(h, AUTHORS_SIDE).astype(np.float32)
        cols = _bilinear_matrix(w, AUTHORS_SIDE).astype(np.float32)
        x = np.einsum("ih,nhwc,jw->nijc", rows, x, cols, optimize=True)
        x = np.clip(x, 0.0, 1.0)  # convex weights: only float rounding to remove
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x, np.float32)


def layout_info(info: DatasetInfo, layout: str) -> DatasetInfo:
    """``info`` for images in ``layout``: the same name and classes (tables compare it
    with the same paper rows); for "authors", image_shape (32, 32, 3) and the per-channel
    mean and std repeated over the three channels. The authors' normalisation of their
    resized MNIST is not in AUTHORS-CODE.md; bilinear upsampling keeps the mean within
    rounding, so jgi keeps MNIST's statistics."""
    if layout not in LAYOUTS:
        raise DataError(f"Unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}.")
    if layout == "jgi" or info.image_shape == (AUTHORS_SIDE, AUTHORS_SIDE, 3):
        return info
    reps = 3 // len(info.mean)
    return dataclasses.replace(info, image_shape=(AUTHORS_SIDE, AUTHORS_SIDE, 3),
                               mean=tuple(info.mean) * reps, std=tuple(info.std) * reps)


def apply_layout(dataset: Dataset, layout: str) -> Dataset:
    """The whole dataset in ``layout`` (see :func:`layout_images`); the same object for
    "jgi" or when it is already in the layout."""
    info = layout_info(dataset.info, layout)
    if info is dataset.info:
        return dataset
    return dataclasses.replace(dataset, info=info,
                               x_train=layout_images(dataset.x_train, layout),
                               x_test=layout_images(dataset.x_test, layout))


def normalize(x, info: DatasetInfo):
    """Maps images in [0, 1] to the model's input space: ``(x - mean) / std`` per channel."""
    return (x - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)


def denormalize(x, info: DatasetInfo):
    """Inverse of :func:`normalize`: model inputs back to [0, 1] pixel units."""
    return x * np.asarray(info.std, np.float32) + np.asarray(info.mean, np.float32)


def input_bounds(info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lower, upper) bounds of valid images in the model's input space."""
    mean = np.asarray(info.mean, np.float32)
    std = np.asarray(info.std, np.float32)
    return (0.0 - mean) / std, (1.0 - mean) / std
