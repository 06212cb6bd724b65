"""Models as pure ``init``/``apply`` functions (see :mod:`jgi.models.interface`).

``MODELS`` maps a name to a factory; ``get(name, **options)`` builds one with a clear
error for unknown names.

The layers the models share live here too: :mod:`~jgi.models.layers` (convolution,
dense), :mod:`~jgi.models.dropout` (dropout with explicit masks) and
:mod:`~jgi.models.bottleneck` (the PRECODE and CVB variational bottlenecks). Dropout and
the bottlenecks are model-level defenses; :mod:`jgi.defenses` re-exports them, and
nothing in ``jgi.models`` imports ``jgi.defenses``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from jgi.models.cnn import cnn
from jgi.models.cnn6 import cnn6 as cnn6_model  # the name cnn6 stays the module
from jgi.models.cnn6 import cnn6d
from jgi.models.imprint import imprinted
from jgi.models.interface import Model, Noise, Params, no_noise
from jgi.models.lenet import lenet
from jgi.models.mlp import mlp
from jgi.models.resnet import resnet18
from jgi.models.resnet_bn import bn_cnn, resnet18_bn
from jgi.models.study import convnet3, study_cnn
from jgi.models.vit import vit

MODELS: dict[str, Callable[..., Model]] = {
    "cnn": cnn,
    "cnn6": cnn6_model,
    "cnn6d": cnn6d,
    "imprint": imprinted,
    "lenet": lenet,
    "mlp": mlp,
    "resnet18": resnet18,
    "resnet18_bn": resnet18_bn,
    "bn_cnn": bn_cnn,
    "study_cnn": study_cnn,
    "convnet3": convnet3,
    "vit": vit,
}


def get(name: str, **options: Any) -> Model:
    """Builds the registered model ``name`` with ``options``.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    factory = MODELS.get(name)
    if factory is None:
        raise ValueError(f"Unknown model {name!r}. Valid models: {', '.join(sorted(MODELS))}.")
    valid = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"Model {name!r} has no option(s) {unknown}; its options are: "
                         f"{', '.join(valid)}.")
    return factory(**options)


__all__ = ["MODELS", "Model", "Noise", "Params", "bn_cnn", "cnn", "cnn6_model", "cnn6d",
           "convnet3", "get", "imprinted", "lenet", "mlp", "no_noise", "resnet18", "resnet18_bn",
           "study_cnn", "vit"]
