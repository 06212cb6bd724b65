"""Attacks that mimic the client: IG plus a statement of what the attacker knows.

Scheliga et al., "Combining stochastic defenses to resist gradient inversion: an
ablation study", section 4 and Algorithm 2. Every targeted attack of that paper is the
generic IG loop (:mod:`jgi.attacks.ig`) in which the attacker's dummy update is the
client's own computation (:func:`jgi.fl.client_update`) run on the dummy image, with
each source of the client's randomness either

- ``"known"``: the client's true value is handed to the attacker (WIIG);
- ``"estimate"``: optimised jointly with the image, one estimate per victim in the
  runner's carry (DIA: relaxed dropout masks; VBIA: bottleneck eps; DPIA: DP noise);
- ``"observed"``: read off the shared update (GPIA: pruning mask = update != 0);
- ``"ignore"``: sampled afresh every step, or, for DP and pruning, not applied to the
  dummy update at all (IG);
- ``"exclude"`` (bottleneck only): the bottleneck decoder and every later layer are left
  out of the gradient distance (PIG; the kept layers are
  :meth:`jgi.models.Model.leaves_before_bottleneck_decoder`).

:class:`~jgi.attacks.knowledge.Knowledge` is that statement; :func:`problem` turns it
into a runner :class:`~jgi.attacks.runner.Problem`. Each estimated quantity is an
:class:`~jgi.attacks.knowledge.Estimator` defined, with its paper's init, regulariser
and projection, in that paper's module: :data:`jgi.attacks.dia.ESTIMATOR` (masks),
:data:`jgi.attacks.vbia.ESTIMATOR` (eps), :data:`jgi.attacks.dpia.ESTIMATOR` (DP
noise). :data:`ESTIMATORS` lists them in the order their regularisers enter the loss;
:func:`problem` composes the ones the knowledge switches on. Settings not given by the
papers and chosen here:

- Optimiser: one Adam (lr 1, the IG schedule with its plateau rule) over all optimised
  quantities; the sign of the gradient is taken for the image only, as the DIA
  authors' code does (``use_grad_signs`` acts on the dummy data only).
  ``Knowledge.signed_estimates`` signs the estimates' gradient too and
  ``Knowledge.estimate_lr_scale`` scales their step (candidate (3) for the paper's DP
  rows, :mod:`jgi.attacks.authors`; off by default).
- ``dp="fresh"``: the dummy update is privatised as the client's is, with noise drawn
  from ``fold_in(step key, 1)`` every iteration (candidate (1); off by default). The
  model noise keeps the step key itself, so the fresh model noise is the same as
  without it.
- Initial keys: the image is drawn from the victim's init key itself (so an attack with
  nothing to estimate starts where IG starts), each estimate from
  ``fold_in(key, estimator.salt)``.
- DP mimicked (known or estimated noise): the dummy update is clipped to tau, the noise
  added, divided by the batch size (1), exactly as the client computes it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgi.attacks import dia, dpia, runner, vbia
from jgi.attacks.distances import DISTANCES
from jgi.attacks.ig import IGConfig, box_projection
from jgi.attacks.knowledge import (
    MODES,
    BottleneckMode,
    DPMode,
    DropoutMode,
    Estimator,
    Knowledge,
    PruneMode,
    Regularizer,
)
from jgi.attacks.regularizers import total_variation
from jgi.defenses import dp as dp_lib
from jgi.defenses import pruning
from jgi.defenses.stack import DefenseStack
from jgi.fl.client import ClientRandomness, client_update
from jgi.fl.observation import Observation
from jgi.models.interface import Model, Params

__all__ = ["ESTIMATORS", "MODES", "BottleneckMode", "DPMode", "DropoutMode", "Estimator",
           "Knowledge", "PruneMode", "Regularizer", "estimators", "make_dummy_update",
           "optimizer", "problem", "reconstruct", "reconstruct_observation"]

# The estimators, in the order their regularisers are added to the loss.
ESTIMATORS: tuple[Estimator, ...] = (dia.ESTIMATOR, vbia.ESTIMATOR, dpia.ESTIMATOR)


def estimators(knowledge: Knowledge) -> tuple[Estimator, ...]:
    """The :data:`ESTIMATORS` that ``knowledge`` switches on (its field says "estimate")."""
    return tuple(e for e in ESTIMATORS if getattr(knowledge, e.randomness) == "estimate")


def optimizer(config: IGConfig,
              knowledge: Knowledge | None = None) -> optax.GradientTransformationExtraArgs:
    """IG's optimiser over a candidate dict.

    The gradient's sign for ``"x"`` only (for every entry with
    ``knowledge.signed_estimates``); with ``knowledge.estimate_lr_scale != 1`` every
    entry but ``"x"`` has its step scaled by that factor after Adam and the plateau
    rule. The defaults give exactly IG's optimiser with the estimates unsigned.
    """
    knowledge = Knowledge() if knowledge is None else knowledge

    def entries(select):
        def mask(candidate):
            out = {}
            for k, v in candidate.items():
                on = bool(select(k))
                out[k] = jax.tree.map(lambda _, on=on: on, v)
            return out
        return mask

    sign_mask = entries(lambda k: True) if knowledge.signed_estimates else entries(
        lambda k: k == "x")
    base = config.optimizer(sign_mask=sign_mask)
    if knowledge.estimate_lr_scale == 1.0:
        return base
    return optax.chain(base, optax.masked(optax.scale(knowledge.estimate_lr_scale),
                                          entries(lambda k: k != "x")))


def make_dummy_update(model: Model, stack: DefenseStack, knowledge: Knowledge,
                      input_shape: tuple[int, int, int]):
    """``(candidate, victim, context, key) -> update``: the client's computation, mimicked.

    The model noise is the client's (known), the candidate's (estimated) or fresh
    (ignored); DP is applied with the client's, the estimated or freshly drawn noise
    (``dp="fresh"``), or not at all;
    the observed pruning mask is applied or not. With everything known, this runs
    exactly the client's :func:`jgi.fl.client_update` (pruning through the mask the
    client's own pruning produced), so the true image gives the observed update.
    """
    input_shape = tuple(input_shape)
    dp_only = DefenseStack(dp=stack.dp)
    if knowledge.dp == "fresh" and stack.dp is None:
        raise ValueError("dp='fresh' needs a stack with DP-SGD; the stack is "
                         f"{stack.names or 'no defense'}.")

    def model_noise(candidate, victim, key):
        fresh = model.sample_noise(key, input_shape, 1)
        noise = {}
        if model.dropout > 0:
            noise["dropout"] = {"known": lambda: victim["noise"]["dropout"],
                                "estimate": lambda: candidate[dia.ESTIMATOR.name]}.get(
                                    knowledge.dropout, lambda: fresh["dropout"])()
        if model.bottleneck is not None:
            noise["eps"] = {"known": lambda: victim["noise"]["eps"],
                            "estimate": lambda: candidate[vbia.ESTIMATOR.name]}.get(
                                knowledge.bottleneck, lambda: fresh["eps"])()
        return noise

    def dummy_update(candidate, victim, context, key):
        x, y = candidate["x"][None], victim["label"][None]
        noise = model_noise(candidate, victim, key)
        if knowledge.dp == "ignore":
            update = client_update(model, context["params"], x, y, ClientRandomness(noise))
        else:
            if knowledge.dp == "fresh":  # candidate (1): new noise every iteration
                xi = dp_lib.sample_noise(jax.random.fold_in(key, 1), context["params"],
                                         stack.dp)
            elif knowledge.dp == "known":
                xi = victim["dp_noise"]
            else:
                xi = candidate[dpia.ESTIMATOR.name]
            update = client_update(model, context["params"], x, y,
                                   ClientRandomness(noise, xi), dp_only)
        if knowledge.prune == "observed":
            update = pruning.apply_mask(update, pruning.observed_mask(victim["target"]))
        return update

    return dummy_update


def problem(model: Model, stack: DefenseStack, knowledge: Knowledge,
            input_shape: tuple[int, int, int], params: Params,
            config: IGConfig = IGConfig()) -> runner.Problem:
    """The attack as a runner :class:`~jgi.attacks.runner.Problem`.

    Victim data: ``{"target": observed update, "label": y}`` plus, when the knowledge
    says so, ``"noise"`` (the client's model noise, batch size 1) and ``"dp_noise"``
    (the client's Xi). Context: ``{"params", "bounds"}``. ``params`` here only fixes
    PIG's leaf mask (estimates take their shapes from ``context["params"]``).

    The candidate is ``{"x": image}`` plus one entry per estimator the knowledge switches
    on (:func:`estimators`), under the estimator's name; the loss is the gradient
    distance plus the TV prior plus the estimators' regularisers, in
    :data:`ESTIMATORS` order; each step projects the image onto the box, then every
    estimate with its estimator's projection.
    """
    knowledge.check(model, stack)
    input_shape = tuple(input_shape)
    leaf_mask = (model.leaves_before_bottleneck_decoder(params)
                 if knowledge.bottleneck == "exclude" else None)
    distance_fn = DISTANCES[config.distance]
    project_box = box_projection(config)
    active = estimators(knowledge)

    def init(key, victim, context):
        # The image is drawn from ``key`` itself, as plain IG draws it, so that an attack
        # with nothing to estimate starts exactly where IG starts.
        candidate = {"x": config.init_std * jax.random.normal(key, input_shape, jnp.float32)}
        for e in active:
            candidate[e.name] = e.init(jax.random.fold_in(key, e.salt), model, stack, context,
                                       input_shape)
        return candidate

    dummy_update = make_dummy_update(model, stack, knowledge, input_shape)

    def objective(candidate, victim, context, key):
        update = dummy_update(candidate, victim, context, key)
        distance = distance_fn(update, victim["target"], leaf_mask=leaf_mask)
        tv = total_variation(candidate["x"])
        loss = distance + config.tv_weight * tv
        aux = {"distance": distance, "tv": tv}
        for e in active:
            if e.regularizer is not None:
                reg = e.regularizer.fn(candidate[e.name], model, stack)
                loss = loss + e.regularizer.weight(knowledge) * reg
                aux[e.regularizer.name] = reg
        return loss, aux

    def project(candidate, victim, context):
        candidate = project_box(candidate, victim, context)
        for e in active:
            if e.project is not None:
                candidate = {**candidate, e.name: e.project(candidate[e.name])}
        return candidate

    return runner.Problem(init=init, objective=objective,
                          optimizer=optimizer(config, knowledge), project=project)


def reconstruct(model: Model, params: Params, updates: Any, labels: jax.Array,
                key: jax.Array, stack: DefenseStack, knowledge: Knowledge,
                config: IGConfig = IGConfig(), *, input_shape: tuple[int, int, int],
                bounds=None, client_noise: Any = None, client_dp_noise: Any = None,
                progress: bool | str = True, checkpoint=None) -> runner.AttackResult:
    """Inverts every victim's update with the attack described by ``knowledge``.

    Args:
      model: the attacked model, with the client's model-level defenses built in.
      params: the parameters the clients computed their updates with.
      updates: observed updates, every leaf with a leading victim axis.
      labels: labels (V,) or soft labels (V, classes).
      key: PRNG key (initialisation and freshly sampled randomness).
      stack: the defense stack the client used.
      knowledge: what the attacker knows (:class:`Knowledge`).
      config: the IG hyperparameters shared by every targeted attack.
      input_shape: (H, W, C).
      bounds: per-channel (lower, upper) of valid inputs, or None.
      client_noise: the clients' model noise (leading victim axis, batch 1), needed
        when ``knowledge`` says "known" for dropout or the bottleneck (WIIG).
      client_dp_noise: the clients' DP noise (leading victim axis), for dp="known".
      progress, checkpoint: as in :func:`jgi.attacks.runner.run`.

    Returns:
      :class:`~jgi.attacks.runner.AttackResult`; ``best["x"]`` holds the
      reconstructions and ``best["masks"]``, ``best["eps"]``, ``best["xi"]`` the
      estimated randomness, where estimated.
    """
    labels = jnp.asarray(labels)
    labels = labels.astype(jnp.int32 if labels.ndim == 1 else jnp.float32)
    victims = {"target": updates, "label": labels}
    if knowledge.needs_client_noise():
        if client_noise is None:
            raise ValueError("This attack is told the client's model noise ('known'); pass "
                             "client_noise= (the noise the client used, per victim).")
        victims["noise"] = client_noise
    if knowledge.needs_client_dp_noise():
        if client_dp_noise is None:
            raise ValueError("This attack is told the client's DP noise (dp='known'); pass "
                             "client_dp_noise= (the noise the client added, per victim).")
        victims["dp_noise"] = client_dp_noise
    context = {"params": params,
               "bounds": None if bounds is None else tuple(jnp.asarray(b) for b in bounds)}
    return runner.run(problem(model, stack, knowledge, input_shape, params, config), victims,
                      context, key, config.stopping(), chunk_size=config.chunk_size,
                      progress=progress, checkpoint=checkpoint)



def reconstruct_observation(model: Model, observation: Observation, labels: jax.Array,
                            key: jax.Array, stack: DefenseStack, knowledge: Knowledge,
                            config: IGConfig = IGConfig(), *, input_shape: tuple[int, int, int],
                            bounds=None, client_noise: Any = None, client_dp_noise: Any = None,
                            progress: bool | str = True,
                            checkpoint=None) -> runner.AttackResult:
    """:func:`reconstruct` on what the server observed (:class:`jgi.fl.Observation`).

    These attacks mimic one client step on one image, so the observation must be one
    image's one-step gradient per victim (``observe_victims``, or ``observe`` with
    :data:`jgi.fl.ONE_STEP` on a batch of one); any other is refused with the reason.
    ``observation.update`` carries the leading victim axis, ``observation.params`` the
    global parameters. The other arguments are :func:`reconstruct`'s.
    """
    observation.require_single_gradient("This targeted attack (IG + what it knows of the "
                                        "client's randomness)")
    return reconstruct(model, observation.params, observation.update, labels, key, stack,
                       knowledge, config, input_shape=input_shape, bounds=bounds,
                       client_noise=client_noise, client_dp_noise=client_dp_noise,
                       progress=progress, checkpoint=checkpoint)
