"""Combined Defenses Inversion Attack (CDIA): configures itself from the client's stack.

Scheliga et al., "Combining stochastic defenses to resist gradient inversion: an
ablation study", section 4.4, Algorithm 2. Told which defenses the client used, CDIA
targets each one the way its single-defense attack does:

==================  =============================================  ==================
defense             what CDIA does                                 single attack
==================  =============================================  ==================
dropout             optimises relaxed masks with the image         DIA
gradient pruning    applies the observed mask (update != 0)        GPIA
PRECODE / CVB       optimises the bottleneck's eps                 VBIA
DP-SGD              nothing (not targeted; DPIA did worse than IG)  IG
none / DP only      plain Inverting Gradients                      IG
==================  =============================================  ==================

It works on any model that follows :class:`jgi.models.Model` (dropout masks under
``noise["dropout"]``, bottleneck noise under ``noise["eps"]``, ``model.dropout`` and
``model.bottleneck`` set), jitted and vmapped over all victims by the shared runner,
with the estimated masks and eps per victim in the runner's carry.

Example (a few iterations; the paper runs up to 20,000)::

    >>> import jax
    >>> from jgi import defenses, fl, models
    >>> from jgi.attacks import cdia, ig
    >>> stack = defenses.from_names("dropout,prune")
    >>> model = models.get("cnn", **stack.model_options())
    >>> params = model.init(jax.random.key(0), (28, 28, 1))
    >>> x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    >>> y = jax.numpy.array([3, 7])
    >>> client = fl.sample_victim_randomness(jax.random.key(2), model, params, stack,
    ...                                      (28, 28, 1), 2)
    >>> updates = fl.victim_updates(model, params, x, y, client, stack)
    >>> k = cdia.knowledge_for(stack)
    >>> (k.dropout, k.bottleneck, k.dp, k.prune)
    ('estimate', 'ignore', 'ignore', 'observed')
    >>> result = cdia.reconstruct(model, params, updates, y, jax.random.key(3), stack,
    ...                           ig.IGConfig(max_iters=10), input_shape=(28, 28, 1),
    ...                           progress=False)
    >>> result.best["x"].shape, result.best["masks"]["conv0"].shape
    ((2, 28, 28, 1), (2, 1, 14, 14, 16))
"""

from __future__ import annotations

from typing import Any

import jax

from jgi import checks
from jgi.attacks import mimic, runner
from jgi.attacks.ig import IGConfig
from jgi.attacks.mimic import Knowledge
from jgi.defenses.stack import DefenseStack
from jgi.models.interface import Model, Params

NAME = "cdia"


def knowledge_for(stack: DefenseStack) -> Knowledge:
    """Algorithm 2's configuration for the defenses in ``stack``."""
    return Knowledge(dropout="estimate" if stack.dropout > 0 else "ignore",
                     bottleneck="estimate" if stack.bottleneck else "ignore",
                     dp="ignore",
                     prune="observed" if stack.prune > 0 else "ignore")


def check_observation(params: Params, updates: Any, labels: jax.Array, *,
                      where: str) -> None:
    """``updates`` = one update per victim (``params``' structure, leading V axis) and
    ``labels`` one entry per victim (leading V axis). Trace-time only.

    Raises:
      ValueError: naming the argument, the first mismatched leaf and both shapes.
    """
    checks.rank(labels, {1, 2, 3}, name="labels", where=where,
                layout="(victims,) or (victims, ...)")
    victims = checks.shape_of(labels)[0]
    checks.tree_like(updates, params, name="updates", reference_name="params", where=where,
                     leading=(victims,),
                     what=f"one update per victim: labels has {victims} victims")


def reconstruct(model: Model, params: Params, updates: Any, labels: jax.Array,
                key: jax.Array, stack: DefenseStack, config: IGConfig = IGConfig(), *,
                input_shape: tuple[int, int, int], bounds=None,
                progress: bool | str = True, checkpoint=None) -> runner.AttackResult:
    """Inverts every victim's update with CDIA.

    Args:
      model: the attacked model with the client's model-level defenses built in.
      params: the parameters the clients computed their updates with.
      updates: observed updates, every leaf with a leading victim axis.
      labels: labels (V,) (known, or from :func:`jgi.attacks.labels.idlg_labels`).
      key: PRNG key.
      stack: the defense stack the client used (the server knows the architecture; the
        paper assumes it knows the stack).
      config: IG hyperparameters (the paper's by default).
      input_shape: (H, W, C).
      bounds: per-channel (lower, upper) of valid inputs, or None.
      progress, checkpoint: as in :func:`jgi.attacks.runner.run`.

    Returns:
      :class:`~jgi.attacks.runner.AttackResult` with ``best["x"]`` and the estimated
      ``best["masks"]`` / ``best["eps"]`` where the stack has dropout / a bottleneck.

    Raises:
      ValueError: ``updates`` does not have ``params``' structure with one leading
        victim axis, or ``labels`` has another number of victims (names both shapes).
    """
    check_observation(params, updates, labels, where="cdia.reconstruct")
    return mimic.reconstruct(model, params, updates, labels, key, stack, knowledge_for(stack),
                             config, input_shape=input_shape, bounds=bounds,
                             progress=progress, checkpoint=checkpoint)
