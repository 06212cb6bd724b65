"""Defenses, one family per module, with the client's randomness explicit.

- :mod:`~jgi.defenses.dropout`: dropout masks (model-level; the layer lives in
  :mod:`jgi.models.dropout`, re-exported here).
- :mod:`~jgi.defenses.bottleneck`: PRECODE and CVB variational bottlenecks (model-level;
  the layers live in :mod:`jgi.models.bottleneck`, re-exported here).
- :mod:`~jgi.defenses.dp`: DP-SGD as a transformation of per-example gradients.
- :mod:`~jgi.defenses.pruning`: per-layer magnitude pruning.
- :mod:`~jgi.defenses.input_encoding`: MixUp and InstaHide.
- :mod:`~jgi.defenses.stack`: which of them a client uses (:class:`DefenseStack`).
- :mod:`~jgi.defenses.chain`: the stack's gradient-level defenses as one optax chain,
  clip -> noise -> mean -> prune (:func:`gradient_transform`).
"""

from jgi.defenses import bottleneck, chain, dp, dropout, input_encoding, pruning, stack
from jgi.defenses.chain import gradient_transform
from jgi.defenses.dp import DPConfig
from jgi.defenses.stack import (
    DEFENSE_NAMES,
    NO_DEFENSE,
    DefenseStack,
    ablation_stacks,
    from_names,
    parse_names,
)

__all__ = [
    "DEFENSE_NAMES",
    "DPConfig",
    "DefenseStack",
    "NO_DEFENSE",
    "ablation_stacks",
    "bottleneck",
    "chain",
    "dp",
    "dropout",
    "from_names",
    "gradient_transform",
    "input_encoding",
    "parse_names",
    "pruning",
    "stack",
]
