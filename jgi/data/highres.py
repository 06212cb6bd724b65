"""High-resolution images for the medical attack (Health, BREADTH.md section 3).

Three sources, every image returned as float32 (side, side, 3) in [0, 1] with a record
of what it is and whether it was upsampled:

- ``skimage:<name>``: the images scikit-image ships inside its wheel (no download):
  ``retina`` (a 1411x1411 fundus photograph, the only native image above 1024),
  ``camera`` (512x512 grey), ``cell`` (660x550 grey), ``ihc`` (512x512
  immunohistochemistry, ``skimage.data.immunohistochemistry``). Needs
  ``scikit-image`` (an optional dependency; a clear error says so when it is missing).
- ``pneumoniamnist:<index>``: one image of PneumoniaMNIST's training split, 28x28, from
  the offline files (``JGI_DATA_DIR``; :func:`jgi.data.load`), always upsampled.
- ``folder:<path>``: the first image (sorted by name) of a user's local folder of
  PNG/JPEG X-rays or MRIs (the paper's Kaggle sets: chest-xray-pneumonia,
  brain-mri-images-for-brain-tumor-detection), read with PIL or matplotlib.

Choices: a non-square image is centre-cropped to its shorter side before resizing;
grey images are copied to three channels (the paper's LeNet takes 3-channel input);
resizing is ``jax.image.resize`` with ``"linear"`` (antialiased when shrinking), and
``upsampled`` is True when the side grows.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jgi.data.datasets import DataError
from jgi.data.datasets import load as load_dataset

SKIMAGE_NAMES = {"retina": "retina", "camera": "camera", "cell": "cell",
                 "ihc": "immunohistochemistry"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One image at one resolution and where it came from.

    Attributes:
      image: (side, side, 3) float32 in [0, 1].
      source: the spec it was loaded from ("skimage:retina", "pneumoniamnist:0", ...).
      native_shape: (H, W) before cropping and resizing.
      upsampled: the side grew (the image has less detail than its pixel count).
      label: the class label if the source has one (PneumoniaMNIST), else 0.
    """

    image: np.ndarray
    source: str
    native_shape: tuple[int, int]
    upsampled: bool
    label: int = 0


def _to_rgb_unit(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        img = img.astype(np.float32)
        if img.max() > 1.0:
            img = img / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    elif img.ndim == 3 and img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise DataError(f"Expected a grey, RGB or RGBA image, got shape {img.shape}.")
    return np.clip(img, 0.0, 1.0)


def square_resize(img: np.ndarray, side: int) -> tuple[np.ndarray, bool]:
    """Centre-crops to a square and resizes to ``side``; returns ``(image, upsampled)``."""
    if side < 1:
        raise ValueError(f"square_resize: side must be >= 1, got {side}.")
    img = _to_rgb_unit(img)
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[top:top + s, left:left + s]
    out = jax.image.resize(jnp.asarray(img), (side, side, 3), "linear", antialias=True)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0), side > s


def skimage_image(name: str) -> np.ndarray:
    """One of scikit-image's bundled images (``SKIMAGE_NAMES``), native size."""
    if name not in SKIMAGE_NAMES:
        raise DataError(f"Unknown scikit-image image {name!r}; valid: "
                        f"{', '.join(SKIMAGE_NAMES)}.")
    try:
        import skimage.data
    except ImportError as e:
        raise DataError("The scikit-image images need scikit-image (`pip install "
                        "scikit-image`); or use pneumoniamnist:<index> or folder:<path>.") from e
    return np.asarray(getattr(skimage.data, SKIMAGE_NAMES[name])())


def folder_images(path: str | os.PathLike) -> list[Path]:
    """The PNG/JPEG files of a folder (recursively), sorted.

    Raises:
      DataError: the folder does not exist, is not a folder, or holds no PNG/JPEG.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(f"Image folder {folder} does not exist. Point it at a local copy of "
                        "your X-ray/MRI images (for example the Kaggle chest-xray-pneumonia "
                        "set's train/NORMAL folder).")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; pass the folder that holds the images.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file())
    if not files:
        raise DataError(f"Image folder {folder} holds no PNG or JPEG files "
                        f"({', '.join(IMAGE_SUFFIXES)}).")
    return files


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Reads one PNG/JPEG with PIL (or matplotlib when PIL is missing)."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    except ImportError:
        import matplotlib.image
        return np.asarray(matplotlib.image.imread(str(path)))


def load_image(spec: str, side: int, *, data_dir: str | os.PathLike | None = None
               ) -> SourceImage:
    """One image at ``side`` x ``side`` from a spec (see the module docstring)."""
    kind, _, arg = spec.partition(":")
    label = 0
    if kind == "skimage":
        native = skimage_image(arg)
    elif kind == "pneumoniamnist":
        try:
            index = int(arg or 0)
        except ValueError as e:
            raise DataError(f"pneumoniamnist:<index> needs an integer index, got {arg!r}.") \
                from e
        ds = load_dataset("pneumoniamnist", data_dir=data_dir)
        if not 0 <= index < len(ds.x_train):
            raise DataError(f"pneumoniamnist index {index} is outside 0..{len(ds.x_train) - 1}.")
        native, label = np.asarray(ds.x_train[index]), int(ds.y_train[index])
    elif kind == "folder":
        native = read_image_file(folder_images(arg)[0])
    else:
        raise DataError(f"Unknown image source {spec!r}; use skimage:<name> "
                        f"({', '.join(SKIMAGE_NAMES)}), pneumoniamnist:<index> or "
                        "folder:<path>.")
    native_shape = tuple(int(s) for s in np.shape(native)[:2])
    image, up = square_resize(native, side)
    return SourceImage(image=image, source=spec, native_shape=native_shape, upsampled=up,
                       label=label)


__all__ = ["IMAGE_SUFFIXES", "SKIMAGE_NAMES", "SourceImage", "folder_images", "load_image",
           "read_image_file", "skimage_image", "square_resize"]
