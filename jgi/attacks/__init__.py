"""Gradient-inversion attacks, one paper per module, all run by :mod:`jgi.attacks.runner`.

- :mod:`~jgi.attacks.ig`: Inverting Gradients (Geiping et al. 2020).
- :mod:`~jgi.attacks.mimic`: the targeted attacks' common form (IG + what the attacker
  knows about the client's randomness), used by
  :mod:`~jgi.attacks.wiig`, :mod:`~jgi.attacks.dia`, :mod:`~jgi.attacks.gpia`,
  :mod:`~jgi.attacks.vbia`, :mod:`~jgi.attacks.dpia`, :mod:`~jgi.attacks.pig` and
  :mod:`~jgi.attacks.cdia` (Scheliga et al.).
- :mod:`~jgi.attacks.labels`: analytic label recovery (iDLG, Zhao et al. 2020).

``ATTACKS`` maps a name to a function ``knowledge_for(stack) -> Knowledge``.
"""

from jgi.attacks import cdia, dia, dpia, gpia, ig, labels, mimic, pig, runner, vbia, wiig
from jgi.checkpointing import AttackCheckpoint
from jgi.attacks.mimic import Knowledge
from jgi.attacks.runner import STOP_REASONS, AttackResult, Problem, StoppingRule


def _ig_knowledge(stack):
    del stack
    return Knowledge()


ATTACKS = {
    "ig": _ig_knowledge,
    "wiig": wiig.knowledge_for,
    "dpia": dpia.knowledge_for,
    "gpia": gpia.knowledge_for,
    "vbia": vbia.knowledge_for,
    "dia": dia.knowledge_for,
    "pig": pig.knowledge_for,
    "cdia": cdia.knowledge_for,
}

__all__ = ["ATTACKS", "AttackCheckpoint", "AttackResult", "Knowledge", "Problem",
           "STOP_REASONS", "StoppingRule", "cdia", "dia", "dpia", "gpia", "ig", "labels",
           "mimic", "pig", "runner", "vbia", "wiig"]
