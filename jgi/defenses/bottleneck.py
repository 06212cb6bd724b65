"""PRECODE and CVB, re-exported: the layers live in :mod:`jgi.models.bottleneck`.

The variational bottlenecks are model-level defenses: they change the forward pass, so
the models build them in (``models.get(name, bottleneck="precode" | "cvb")``) and
``jgi.models`` imports nothing from ``jgi.defenses``. This module keeps
``jgi.defenses.bottleneck`` working for users who look for them among the defenses; see
:mod:`jgi.models.bottleneck` for the layers, their papers and the KL deviation.
"""

from jgi.models.bottleneck import (
    BOTTLENECKS,
    PRECODE_POSITIONS,
    check_precode_position,
    cvb_apply,
    cvb_eps_shape,
    cvb_init,
    cvb_latent_channels,
    kl_standard_normal,
    precode_apply,
    precode_eps_shape,
    precode_init,
)

__all__ = [
    "BOTTLENECKS",
    "PRECODE_POSITIONS",
    "check_precode_position",
    "cvb_apply",
    "cvb_eps_shape",
    "cvb_init",
    "cvb_latent_channels",
    "kl_standard_normal",
    "precode_apply",
    "precode_eps_shape",
    "precode_init",
]
