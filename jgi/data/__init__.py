"""Image datasets for gradient-inversion experiments, loadable offline.

Every dataset comes back as a :class:`Dataset`: float32 NHWC images in [0, 1] and
int32 labels, plus the per-channel normalisation statistics that the models use.

Sources, tried in this order by ``load(name)`` (``source="auto"``):

1. a local directory of ``.npz`` files (``data_dir=`` or the ``JGI_DATA_DIR``
   environment variable). The reference format is the one of the workplace's
   ``shared/data`` folder: ``mnist.npz`` and ``cifar10.npz`` with ``x_train``,
   ``y_train``, ``x_test``, ``y_test`` (uint8), ``pneumoniamnist.npz`` in MedMNIST's
   own layout. Files with the reference names are verified against their published
   sha256 unless ``verify=False``.
2. tensorflow-datasets (``tfds.data_source``), for users who are online or have the
   dataset prepared already.
3. a small sample of real images shipped inside the package (``jgi/data/embedded``),
   so that the main experiment runs on a fresh offline machine.

Layouts (``LAYOUTS``): "jgi" keeps the native shapes; "authors" gives every image as
32x32x3, MNIST resized and repeated over 3 channels, as the ablation paper's authors ran
it (:func:`layout_images`, :func:`apply_layout`).

Sharp edge: the offline CIFAR-10 file holds all 50,000 training images but only the
first 1,000 of the 10,000 official test images, so test accuracies computed from it
are over 1,000 images.
"""

from jgi.data.datasets import (
    DATASETS,
    LAYOUTS,
    DataError,
    Dataset,
    DatasetInfo,
    SOURCES,
    apply_layout,
    denormalize,
    input_bounds,
    layout_images,
    layout_info,
    load,
    normalize,
)

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "LAYOUTS",
    "SOURCES",
    "apply_layout",
    "denormalize",
    "input_bounds",
    "layout_images",
    "layout_info",
    "load",
    "normalize",
]
