"""Dropout with explicit masks, re-exported: the layer lives in :mod:`jgi.models.dropout`.

Dropout is a model-level defense: it changes the forward pass, so the models build it in
(``models.get(name, dropout=p)``) and ``jgi.models`` imports nothing from
``jgi.defenses``. This module keeps ``jgi.defenses.dropout`` working for users who look
for it among the defenses; see :mod:`jgi.models.dropout` for the layer and its paper.
"""

from jgi.models.dropout import apply_mask, sample_mask

__all__ = ["apply_mask", "sample_mask"]
