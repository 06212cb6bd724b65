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
  out of the gradient distance (PIG).

:class:`Knowledge` is that statement; :func:`problem` turns it into a runner
:class:`~jgi.attacks.runner.Problem`. Settings not given by the paper and chosen here:

- Optimiser: one Adam (lr 1, the IG schedule with its plateau rule) over all optimised
  quantities; the sign of the gradient is taken for the image only, as the DIA
  authors' code does (``use_grad_signs`` acts on the dummy data only).
- DIA masks: initialised Bernoulli(1 - p), clamped to [0, 1] after every step,
  regulariser ``1e-4 * sum_l |(1 - mean(mask_l)) - p|`` (DIA paper, authors' code).
- VBIA eps: initialised N(0, I), unconstrained, no regulariser (paper, section 4.3).
- DPIA noise: initialised N(0, (sigma tau)^2) per layer, unconstrained; regulariser
  ``dp_reg_weight * sum_l [(mean_l / (sigma tau))^2 + (std_l / (sigma tau) - 1)^2]``
  pulling each layer's noise toward mean 0 and the DP standard deviation. The paper
  states the target (mean 0, the DP standard deviation) but not the form or weight;
  ours is dimensionless and weighted 1e-4 like DIA's.
- DP mimicked (known or estimated noise): the dummy update is clipped to tau, the noise
  added, divided by the batch size (1), exactly as the client computes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgi.attacks import runner
from jgi.attacks.distances import DISTANCES
from jgi.attacks.ig import IGConfig, box_projection
from jgi.attacks.regularizers import total_variation
from jgi.defenses import dp as dp_lib
from jgi.defenses import pruning
from jgi.defenses.stack import DefenseStack
from jgi.fl.client import ClientRandomness, client_update
from jgi.models.interface import Model, Params

MODES = {
    "dropout": ("ignore", "known", "estimate"),
    "bottleneck": ("ignore", "known", "estimate", "exclude"),
    "dp": ("ignore", "known", "estimate"),
    "prune": ("ignore", "observed"),
}


@dataclasses.dataclass(frozen=True)
class Knowledge:
    """What the attacker knows about, or does with, each source of client randomness.

    Attributes:
      dropout: "ignore" (fresh masks every step), "known" (the client's masks),
        "estimate" (relaxed masks optimised: DIA).
      bottleneck: "ignore" (fresh eps), "known", "estimate" (VBIA), "exclude" (PIG).
      dp: "ignore" (no DP on the dummy update), "known" (client's noise: WIIG),
        "estimate" (noise optimised: DPIA).
      prune: "ignore" or "observed" (the client's mask, read off the update: GPIA).
      mask_reg_weight: DIA's mask regulariser weight (1e-4).
      dp_reg_weight: DPIA's noise regulariser weight (1e-4, our choice).
    """

    dropout: str = "ignore"
    bottleneck: str = "ignore"
    dp: str = "ignore"
    prune: str = "ignore"
    mask_reg_weight: float = 1e-4
    dp_reg_weight: float = 1e-4

    def __post_init__(self):
        for field, valid in MODES.items():
            value = getattr(self, field)
            if value not in valid:
                raise ValueError(f"Knowledge.{field}={value!r} is not one of {', '.join(valid)}.")

    def needs_client_noise(self) -> bool:
        return "known" in (self.dropout, self.bottleneck)

    def needs_client_dp_noise(self) -> bool:
        return self.dp == "known"

    def check(self, model: Model, stack: DefenseStack) -> None:
        """Refuses knowledge about randomness the client does not have, saying why."""
        if self.dropout != "ignore" and model.dropout == 0:
            raise ValueError(f"dropout={self.dropout!r} needs a model with dropout; "
                             f"{model.name} has none (model.dropout = 0).")
        if self.bottleneck != "ignore" and model.bottleneck is None:
            raise ValueError(f"bottleneck={self.bottleneck!r} needs a model with PRECODE or "
                             f"CVB; this {model.name} has no bottleneck.")
        if self.dp != "ignore" and stack.dp is None:
            raise ValueError(f"dp={self.dp!r} needs a stack with DP-SGD; the stack is "
                             f"{stack.names or 'no defense'}.")
        if self.prune == "observed" and stack.prune == 0:
            raise ValueError("prune='observed' needs a stack with gradient pruning; the stack "
                             f"is {stack.names or 'no defense'}.")


def excluded_leaves(model: Model, params: Params) -> list[bool]:
    """PIG's leaf mask: False for the bottleneck decoder and every later layer."""
    if model.bottleneck is None:
        raise ValueError(f"PIG needs a model with a bottleneck; this {model.name} has none.")
    order = list(model.layer_order)
    after = set(order[order.index("bottleneck") + 1:])
    keep = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(k, "key", None) for k in path]
        top = keys[0]
        keep.append(not (top in after or (top == "bottleneck" and "decoder" in keys)))
    return keep


def optimizer(config: IGConfig) -> optax.GradientTransformationExtraArgs:
    """IG's optimiser over a candidate dict; the gradient's sign only for ``"x"``."""
    def sign_mask(candidate):
        return {k: jax.tree.map(lambda _, is_x=(k == "x"): is_x, v)
                for k, v in candidate.items()}

    return config.optimizer(sign_mask=sign_mask)


def make_dummy_update(model: Model, stack: DefenseStack, knowledge: Knowledge,
                      input_shape: tuple[int, int, int]):
    """``(candidate, victim, context, key) -> update``: the client's computation, mimicked.

    The model noise is the client's (known), the candidate's (estimated) or fresh
    (ignored); DP is applied with the client's or the estimated noise, or not at all;
    the observed pruning mask is applied or not. With everything known, this runs
    exactly the client's :func:`jgi.fl.client_update` (pruning through the mask the
    client's own pruning produced), so the true image gives the observed update.
    """
    input_shape = tuple(input_shape)
    dp_only = DefenseStack(dp=stack.dp)

    def model_noise(candidate, victim, key):
        fresh = model.sample_noise(key, input_shape, 1)
        noise = {}
        if model.dropout > 0:
            noise["dropout"] = {"known": lambda: victim["noise"]["dropout"],
                                "estimate": lambda: candidate["masks"]}.get(
                                    knowledge.dropout, lambda: fresh["dropout"])()
        if model.bottleneck is not None:
            noise["eps"] = {"known": lambda: victim["noise"]["eps"],
                            "estimate": lambda: candidate["eps"]}.get(
                                knowledge.bottleneck, lambda: fresh["eps"])()
        return noise

    def dummy_update(candidate, victim, context, key):
        x, y = candidate["x"][None], victim["label"][None]
        noise = model_noise(candidate, victim, key)
        if knowledge.dp == "ignore":
            update = client_update(model, context["params"], x, y, ClientRandomness(noise))
        else:
            xi = victim["dp_noise"] if knowledge.dp == "known" else candidate["xi"]
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
    (the client's Xi). Context: ``{"params", "bounds"}``. ``params`` here only fixes the
    shapes of estimated DP noise and PIG's leaf mask.
    """
    knowledge.check(model, stack)
    input_shape = tuple(input_shape)
    leaf_mask = excluded_leaves(model, params) if knowledge.bottleneck == "exclude" else None
    distance_fn = DISTANCES[config.distance]
    noise_std = stack.dp.noise_std if stack.dp is not None else 0.0
    project_box = box_projection(config)

    def init(key, victim, context):
        # The image is drawn from ``key`` itself, as plain IG draws it, so that an attack
        # with nothing to estimate starts exactly where IG starts.
        k_mask, k_eps, k_dp = (jax.random.fold_in(key, i) for i in (1, 2, 3))
        candidate = {"x": config.init_std * jax.random.normal(key, input_shape, jnp.float32)}
        sample = model.sample_noise(k_mask, input_shape, 1)
        if knowledge.dropout == "estimate":
            candidate["masks"] = sample["dropout"]  # Bernoulli(1 - p), the DIA init
        if knowledge.bottleneck == "estimate":
            candidate["eps"] = jax.random.normal(k_eps, sample["eps"].shape)
        if knowledge.dp == "estimate":
            candidate["xi"] = dp_lib.sample_noise(k_dp, context["params"], stack.dp)
        return candidate

    dummy_update = make_dummy_update(model, stack, knowledge, input_shape)

    def objective(candidate, victim, context, key):
        update = dummy_update(candidate, victim, context, key)
        distance = distance_fn(update, victim["target"], leaf_mask=leaf_mask)
        tv = total_variation(candidate["x"])
        loss = distance + config.tv_weight * tv
        aux = {"distance": distance, "tv": tv}
        if knowledge.dropout == "estimate":
            reg = sum(jnp.abs((1.0 - jnp.mean(m)) - model.dropout)
                      for m in jax.tree.leaves(candidate["masks"]))
            loss = loss + knowledge.mask_reg_weight * reg
            aux["mask_reg"] = reg
        if knowledge.dp == "estimate":
            reg = sum(jnp.square(jnp.mean(xi) / noise_std)
                      + jnp.square(jnp.std(xi) / noise_std - 1.0)
                      for xi in jax.tree.leaves(candidate["xi"]))
            loss = loss + knowledge.dp_reg_weight * reg
            aux["dp_reg"] = reg
        return loss, aux

    def project(candidate, victim, context):
        candidate = project_box(candidate, victim, context)
        if knowledge.dropout == "estimate":
            candidate = {**candidate,
                         "masks": jax.tree.map(lambda m: jnp.clip(m, 0.0, 1.0),
                                               candidate["masks"])}
        return candidate

    return runner.Problem(init=init, objective=objective, optimizer=optimizer(config),
                          project=project)


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

