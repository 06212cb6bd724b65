"""Gradient-inversion attacks, one paper per module, all run by :mod:`jgi.attacks.runner`.

- :mod:`jgi.attacks.ig`: Inverting Gradients (Geiping et al. 2020).
- :mod:`jgi.attacks.labels`: analytic label recovery (iDLG, Zhao et al. 2020).
"""

from jgi.attacks import ig, labels, runner
from jgi.attacks.checkpoint import AttackCheckpoint
from jgi.attacks.runner import STOP_REASONS, AttackResult, Problem, StoppingRule

ATTACKS = {"ig": ig}

__all__ = ["ATTACKS", "AttackCheckpoint", "AttackResult", "Problem", "STOP_REASONS",
           "StoppingRule", "ig", "labels", "runner"]
