"""Gradient-inversion attacks, one paper per module, all run by :mod:`jgi.attacks.runner`.

- :mod:`~jgi.attacks.ig`: Inverting Gradients (Geiping et al. 2020).
- :mod:`~jgi.attacks.mimic`: the targeted attacks' common form (IG + what the attacker
  knows about the client's randomness), used by
  :mod:`~jgi.attacks.wiig`, :mod:`~jgi.attacks.dia`, :mod:`~jgi.attacks.gpia`,
  :mod:`~jgi.attacks.vbia`, :mod:`~jgi.attacks.dpia`, :mod:`~jgi.attacks.pig` and
  :mod:`~jgi.attacks.cdia` (Scheliga et al.).
- :mod:`~jgi.attacks.labels`: analytic label recovery (iDLG, Zhao et al. 2020).

On real FedAvg updates (the leakage study, Zhu, Huang, Xie 2024):

- :mod:`~jgi.attacks.dlg`: DLG and iDLG (Zhu et al. 2019; Zhao et al. 2020), L-BFGS on
  image and soft label; :mod:`~jgi.attacks.lbfgs`: PyTorch's L-BFGS step and optax's
  line-search form, both usable by the runner.
- :mod:`~jgi.attacks.multistep`: multi-step IG on FedAvg weight changes (the client's
  local training simulated; single-step, study and consistent set-ups).
- :mod:`~jgi.attacks.dlf`: DLF (Dimitrov et al. 2022), all local images from a
  multi-step update.
- :mod:`~jgi.attacks.label_counts`: label counts per class from an update (iDLG, Yin,
  LLG, Geng, Dimitrov).

Analytic and malicious-server attacks (each states its ``THREAT_MODEL``):

- :mod:`~jgi.attacks.analytic`: dense-layer input from dW/db (Phong et al. 2017).
- :mod:`~jgi.attacks.rtf`: Robbing the Fed's imprint recovery (Fowl et al. 2022).
- :mod:`~jgi.attacks.cpa`: Cocktail Party Attack, ICA unmixing (Kariyappa et al. 2023).
- :mod:`~jgi.attacks.rgap`: R-GAP, recursive closed form with rank analysis (Zhu and
  Blaschko 2021).

- :mod:`~jgi.attacks.gradinversion`: GradInversion (Yin et al. 2021), BatchNorm
  statistics + group consistency (needs :mod:`jgi.models.resnet_bn`).
- :mod:`~jgi.attacks.cafe`: CAFE (Jin et al. 2021), vertical FL with its own harness.
- :mod:`~jgi.attacks.dmgan`: DMGAN (Hitaj et al. 2017), a malicious client's GAN.

Generative priors (the generators: :mod:`jgi.models.generator`):

- :mod:`~jgi.attacks.ggl`: GGL (Li et al. 2022), CMA-ES in a trained generator's latent.
- :mod:`~jgi.attacks.grnn`: GRNN (Ren et al. 2022), an untrained generator and label head
  fitted jointly.
- :mod:`~jgi.attacks.gias`: GIAS (Jeon et al. 2021), latent then generator-parameter
  search.

Others:

- :mod:`~jgi.attacks.highres`: high-resolution medical images (Dao and Nguyen 2023),
  L-BFGS on the image with squared TV and a six-norm prior.
- :mod:`~jgi.attacks.fedavg_update`: the leakage study's optimisation attacks on a
  FedAvg update by name (single-step, study, consistent IG; DLF).
- :mod:`~jgi.attacks.authors`: opt-in CDIA variants testing the candidate explanations
  of the core paper's DP rows (none is a default).

``ATTACKS`` maps a name to a function ``knowledge_for(stack) -> Knowledge``.
"""

from jgi.attacks import (analytic, authors, cafe, cdia, cpa, dia, dlf, dlg, dmgan, dpia,
                         fedavg_update, ggl, gias, gpia, gradinversion, grnn, highres, ig,
                         label_counts, labels, lbfgs, mimic, multistep, pig, rgap, rtf, runner,
                         vbia, wiig)
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
    # Opt-in: CDIA with DPIA's noise estimate where DP is combined with dropout or a
    # bottleneck (candidate 2 of docs/results/dp-candidates.md), never the default.
    "cdia-dpia": authors.cdia_dp_estimate_knowledge_for,
}

__all__ = ["ATTACKS", "AttackCheckpoint", "AttackResult", "Knowledge", "Problem",
           "STOP_REASONS", "StoppingRule", "analytic", "authors", "cafe", "cdia", "cpa", "dia",
           "dlf", "dlg", "dmgan", "dpia", "fedavg_update", "ggl", "gias", "gpia",
           "gradinversion", "grnn", "highres", "ig", "label_counts", "labels", "lbfgs", "mimic",
           "multistep", "pig", "rgap", "rtf", "runner", "vbia", "wiig"]
