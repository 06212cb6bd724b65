"""Multi-step Inverting Gradients: invert a FedAvg weight change by simulating the client.

A FedAvg client does not share a gradient: it trains E local epochs of
``ceil(n / B)`` minibatch steps (``floor`` with ``drop_last``), with its round's
learning rate, momentum and weight decay, and shares ``W_0 - W_T``
(:mod:`jgi.fl.local`). Multi-step IG (Geiping et al., NeurIPS 2020, its experiments on
updates of several local steps; the "not easy" study's IG runs) optimises dummy images so that the
attacker's simulation of that whole local training on the dummies, :func:`simulate`,
gives the observed weight change: cosine distance between the simulated and the
observed change, plus total variation, Adam on signed gradients with the box
projection, exactly as :mod:`jgi.attacks.ig` (its :class:`~jgi.attacks.ig.IGConfig`).

:func:`simulate` runs the client's step as :func:`jgi.fl.local.make_local_training`
does (:func:`jgi.fl.client_update` without defenses, then ``local.optimizer_for(round)``:
SGD with momentum and coupled weight decay, or Adam; the round's decayed learning
rate); on the true data with the client's key it *is* the client's local training
(tests/attacks/test_multistep.py checks it against :func:`jgi.fl.observe` to float
tolerance). The client's defenses (DP, pruning, input encodings) are not simulated: the
attack inverts undefended training, as IG does.

Batch order. The client shuffles its data every epoch with a key the server does not
know. The attacker's assumption (``order="fixed"``): every epoch visits the dummies in
the same order, dummy ``0 .. B-1`` in the first step, ``B .. 2B-1`` in the second and so
on. In the first epoch this is no loss (the dummies are free variables, any order is a
relabelling); from the second epoch on the real client mixes its batches differently,
which the attack cannot model (DLF, :mod:`jgi.attacks.dlf`, gives every epoch its own
copy of the dummies instead). ``order="client"`` draws the orders from the client's key,
an oracle used to measure what the unknown shuffle costs, and by the equivalence test.

Three set-ups, each an :class:`AttackSetup` (what the attacker simulates, and how many
dummies):

- :func:`consistent_setup`: the observation's own local training on all ``n`` dummies,
  the true number of steps (``E * ceil(n / B)``) and the true learning-rate schedule;
- :func:`study_setup`: the "not easy" study's multi-step IG (Zhu, Huang, Xie 2024,
  BREADTH.md trap 1): ``m`` dummies (1-10) trained E full-batch steps, whatever the
  client's ``n`` and ``B``;
- :func:`single_step_setup`: jgi's existing IG on a multi-step update, the update treated
  as one gradient of ``m`` dummies (one full-batch SGD step; the cosine distance does not
  see the learning rate). With one dummy it is :mod:`jgi.attacks.ig`'s objective.

Labels are given (the true ones, or counts from :mod:`jgi.attacks.label_counts`
expanded with :func:`~jgi.attacks.label_counts.labels_from_counts`); dummy ``i`` keeps
label ``i`` throughout. The runner (:mod:`jgi.attacks.runner`) vmaps over victims, one
victim = one client's observation (all victims share the global parameters, as the
clients of one round do).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from jgi.attacks import runner
from jgi.attacks.distances import DISTANCES
from jgi.attacks.ig import IGConfig, box_projection
from jgi.attacks.regularizers import total_variation
from jgi.defenses.stack import NO_DEFENSE
from jgi.fl.client import client_update, sample_randomness
from jgi.fl.local import LAST_BATCH_STREAM, LocalTraining
from jgi.fl.observation import Observation
from jgi.models.interface import Model, Params

Order = Literal["fixed", "client"]
ORDERS = ("fixed", "client")


def epoch_schedule(local: LocalTraining, num_samples: int, key: jax.Array, order: Order):
    """Per epoch: ``(full batches (full, B), their step keys, last batch, its key)``.

    ``order="client"`` draws them exactly as :mod:`jgi.fl.local` does from the client's
    key (epoch key -> permutation key, step key; last batch ``fold_in(permutation key,
    LAST_BATCH_STREAM)``); ``"fixed"`` uses the identity order in every epoch, with the
    step keys drawn the same way (they only matter for stochastic models). Leading axis:
    epochs.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}.")
    full, _ = local.steps_per_epoch(num_samples)
    b = local.batch(num_samples)

    def one(k):
        k_perm, k_steps = jax.random.split(k)
        perm = (jax.random.permutation(k_perm, num_samples) if order == "client"
                else jnp.arange(num_samples))
        return (perm[: full * b].reshape(full, b), jax.random.split(k_steps, full),
                perm[full * b:], jax.random.fold_in(k_perm, LAST_BATCH_STREAM))

    return jax.vmap(one)(jax.random.split(key, local.epochs))


def simulate(model: Model, params: Params, x: jax.Array, y: jax.Array, local: LocalTraining,
             key: jax.Array, *, order: Order = "fixed", round_index: int = 0) -> Params:
    """The local parameters ``W_T`` after the client's local training on ``(x, y)``.

    Args:
      model: the model (deterministic, or with noise drawn from the step keys).
      params: the global parameters ``W_0``.
      x: examples (n, H, W, C) (the dummies), or (E, n, H, W, C) with one copy per
        epoch (DLF: epoch ``e`` trains on ``x[e]``); ``y`` their labels (n,) or
        (n, classes), the same in every epoch.
      local: the local training to simulate (its epochs, batch size, optimiser).
      key: the key the orders and step keys derive from (the client's, or any).
      order: "fixed" (the attacker's assumption) or "client" (the key's shuffling).
      round_index: the round (learning-rate decay).

    Returns:
      The parameters after ``local.num_steps(n)`` steps. Differentiable in ``x``.
    """
    per_epoch = x.ndim == 5  # images are (H, W, C): (E, n, H, W, C) has one axis more
    n = x.shape[1] if per_epoch else x.shape[0]
    if per_epoch and x.shape[0] != local.epochs:
        raise ValueError(f"simulate: per-epoch inputs need a leading axis of "
                         f"{local.epochs} epochs, got {x.shape[0]}.")
    full, rest = local.steps_per_epoch(n)
    if full < 1:
        raise ValueError(f"simulate: {n} examples are fewer than one batch of "
                         f"{local.batch(n)}.")
    tx = local.optimizer_for(round_index)
    input_shape = tuple(x.shape[2:] if per_epoch else x.shape[1:])
    batches, step_keys, last_idx, last_keys = epoch_schedule(local, n, key, order)
    xs = x if per_epoch else jnp.broadcast_to(x, (local.epochs, *x.shape))

    def step(p, s, xe, idx, k):
        randomness = sample_randomness(k, model, p, NO_DEFENSE, input_shape, idx.shape[0])
        g = client_update(model, p, xe[idx], y[idx], randomness)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    def epoch(carry, inputs):
        xe, b, ks, li, lk = inputs

        def scan_step(c, inp):
            return step(*c, xe, *inp), None

        carry, _ = jax.lax.scan(scan_step, carry, (b, ks))
        if rest:
            carry = step(*carry, xe, li, lk)
        return carry, None

    (params_t, _), _ = jax.lax.scan(epoch, (params, tx.init(params)),
                                    (xs, batches, step_keys, last_idx, last_keys))
    return params_t


def simulated_update(model: Model, params: Params, x: jax.Array, y: jax.Array,
                     local: LocalTraining, key: jax.Array, *, order: Order = "fixed",
                     round_index: int = 0) -> Params:
    """``W_0 - W_T`` of :func:`simulate` (what the client shares)."""
    end = simulate(model, params, x, y, local, key, order=order, round_index=round_index)
    return jax.tree.map(jnp.subtract, params, end)


@dataclasses.dataclass(frozen=True)
class AttackSetup:
    """What the attacker simulates on how many dummies.

    Attributes:
      local: the local training the attacker runs on the dummies.
      num_dummies: how many images it reconstructs.
      round_index: the round whose learning rate it uses.
      order: the batch order it assumes (see the module docstring).
      name: "consistent", "study", "single-step" or a caller's label (records).
    """

    local: LocalTraining
    num_dummies: int
    round_index: int = 0
    order: Order = "fixed"
    name: str = "custom"

    def __post_init__(self):
        if self.num_dummies < 1:
            raise ValueError(f"AttackSetup.num_dummies must be >= 1, got {self.num_dummies}.")
        if self.order not in ORDERS:
            raise ValueError(f"AttackSetup.order must be one of {', '.join(ORDERS)}, got "
                             f"{self.order!r}.")
        if self.local.steps_per_epoch(self.num_dummies)[0] < 1:
            raise ValueError(f"AttackSetup: {self.num_dummies} dummies are fewer than one "
                             f"batch of {self.local.batch(self.num_dummies)}; use more "
                             "dummies or a smaller batch.")

    @property
    def num_steps(self) -> int:
        return self.local.num_steps(self.num_dummies)


def consistent_setup(observation: Observation, order: Order = "fixed") -> AttackSetup:
    """All ``n`` local images, the client's own local training and step count."""
    return AttackSetup(observation.local, observation.num_samples, observation.round, order,
                       "consistent")


def study_setup(observation: Observation, num_dummies: int) -> AttackSetup:
    """The "not easy" study's multi-step IG: ``num_dummies`` dummies, E full-batch steps
    (its code ignores n and B), the client's optimiser otherwise."""
    local = dataclasses.replace(observation.local, batch_size=None, drop_last=False,
                                shares="weight_delta")
    return AttackSetup(local, num_dummies, observation.round, "fixed", "study")


def single_step_setup(observation: Observation, num_dummies: int) -> AttackSetup:
    """The update treated as one gradient of ``num_dummies`` dummies (jgi's IG)."""
    local = LocalTraining(epochs=1, batch_size=None, optimizer="sgd",
                          lr=observation.local.learning_rate(observation.round),
                          shares="weight_delta")
    return AttackSetup(local, num_dummies, 0, "fixed", "single-step")


def objective(model: Model, setup: AttackSetup, config: IGConfig, x: jax.Array,
              labels: jax.Array, target: Params, params: Params, key: jax.Array):
    """Cosine (or ``config.distance``) distance of the simulated update to ``target``
    plus ``config.tv_weight`` times the mean TV of the dummies. Returns ``(loss, aux)``."""
    update = simulated_update(model, params, x, labels, setup.local, key, order=setup.order,
                              round_index=setup.round_index)
    distance = DISTANCES[config.distance](update, target)
    tv = jnp.mean(jax.vmap(total_variation)(x))
    return distance + config.tv_weight * tv, {"distance": distance, "tv": tv}


def problem(model: Model, input_shape: tuple[int, int, int], setup: AttackSetup,
            config: IGConfig = IGConfig()) -> runner.Problem:
    """Multi-step IG as a :class:`~jgi.attacks.runner.Problem`.

    Victim data: ``{"target": observed update, "label": (num_dummies,) int labels,
    "key": the key of the simulated orders (only used with order="client")}``.
    Context: ``{"params": W_0, "bounds": (lower, upper) or None}``.
    """
    shape = (setup.num_dummies, *tuple(input_shape))

    def init(key, victim, context):
        del victim, context
        return {"x": config.init_std * jax.random.normal(key, shape, jnp.float32)}

    def loss(candidate, victim, context, key):
        # The client's key is unknown: fresh step keys every iteration (model noise, as
        # IG); the orders come from victim["key"] only for the oracle order="client".
        k = jax.random.wrap_key_data(victim["key"]) if setup.order == "client" else key
        return objective(model, setup, config, candidate["x"], victim["label"],
                         victim["target"], context["params"], k)

    return runner.Problem(init=init, objective=loss, optimizer=config.optimizer(),
                          project=box_projection(config))


def reconstruct(model: Model, observation: Observation, labels: jax.Array, key: jax.Array,
                setup: AttackSetup, config: IGConfig = IGConfig(), *,
                input_shape: tuple[int, int, int], bounds=None,
                client_keys: jax.Array | None = None, progress: bool | str = False,
                checkpoint=None) -> runner.AttackResult:
    """Inverts every victim's multi-step update, all victims in parallel.

    Args:
      model: the attacked model.
      observation: the victims' observations, ``update`` with a leading victim axis,
        ``params`` shared (:func:`stack_observations` builds it from single ones).
      labels: (V, num_dummies) int labels of the dummies.
      key: PRNG key of the dummy initialisation.
      setup: :class:`AttackSetup` (same for every victim).
      config: :class:`~jgi.attacks.ig.IGConfig` (optimiser, TV, stopping).
      input_shape: (H, W, C).
      bounds: per-channel (lower, upper) of valid inputs, or None.
      client_keys: (V,) the clients' keys, needed only for ``setup.order == "client"``.
      progress, checkpoint: as :func:`jgi.attacks.runner.run`.

    Returns:
      :class:`~jgi.attacks.runner.AttackResult`; ``best["x"]`` is (V, num_dummies, H, W, C).
    """
    labels = jnp.asarray(labels, jnp.int32)
    v = jax.tree.leaves(observation.update)[0].shape[0]
    if labels.shape != (v, setup.num_dummies):
        raise ValueError(f"labels must be (victims, num_dummies) = {(v, setup.num_dummies)}, "
                         f"got {labels.shape}.")
    if setup.order == "client" and client_keys is None:
        raise ValueError("order='client' simulates the client's own shuffling: pass "
                         "client_keys=.")
    keys = client_keys if client_keys is not None else jax.random.split(jax.random.key(0), v)
    victims = {"target": observation.update, "label": labels,
               "key": jax.random.key_data(keys)}
    context = {"params": observation.params,
               "bounds": None if bounds is None else tuple(jnp.asarray(b) for b in bounds)}
    return runner.run(problem(model, input_shape, setup, config), victims, context, key,
                      config.stopping(), chunk_size=config.chunk_size, progress=progress,
                      checkpoint=checkpoint)


def stack_observations(observations: list[Observation]) -> Observation:
    """One :class:`~jgi.fl.Observation` with a leading victim axis on ``update`` from
    several clients' observations of one round (same params, local training, n)."""
    first = observations[0]
    for o in observations[1:]:
        if (o.local, o.num_samples, o.round) != (first.local, first.num_samples, first.round):
            raise ValueError("stack_observations: the victims differ in local training, "
                             "number of samples or round; attack them separately.")
    update = jax.tree.map(lambda *u: jnp.stack(u), *[o.update for o in observations])
    return first.replace(update=update)


STUDY_CONFIG = IGConfig(max_iters=24_000, lr=1.0, tv_weight=1e-6)
"""The "not easy" study's multi-step IG settings (its Table II): Adam lr 1, 24,000
iterations, TV 1e-6 (BREADTH.md section 1)."""

__all__ = ["AttackSetup", "ORDERS", "STUDY_CONFIG", "consistent_setup", "epoch_schedule",
           "objective", "problem", "reconstruct", "simulate", "simulated_update",
           "single_step_setup", "stack_observations", "study_setup"]

