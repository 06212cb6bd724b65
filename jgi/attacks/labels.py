"""Analytic label recovery from the classifier's gradient (iDLG).

Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from Gradients" (2020): for one
example, softmax and cross-entropy, the gradient of the last layer's logits is
``softmax(z) - onehot(y)``, negative only at the true label ``y``. The bias gradient
equals it; without a bias, each weight column's gradient is it times the (non-negative,
after ReLU) features, so the column sums have the same signs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def idlg_labels(update: Any, classifier: str) -> jax.Array:
    """Recovers the label of a batch-size-1 update.

    Args:
      update: the shared gradient pytree (dict of layers), optionally with leading batch
        axes on every leaf (for example one per victim).
      classifier: the key of the last dense layer (``model.classifier``).

    Returns:
      int32 labels with the leading axes of the update (a scalar for one update).
    """
    try:
        layer = update[classifier]
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"idlg_labels: the update has no layer {classifier!r}; pass model.classifier."
        ) from e
    if "b" in layer:
        score = layer["b"]
    else:
        score = jnp.sum(layer["w"], axis=-2)
    return jnp.argmin(score, axis=-1).astype(jnp.int32)
