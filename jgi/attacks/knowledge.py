"""What a targeted attack knows about the client's randomness, and how it estimates the rest.

:class:`Knowledge` states, for each source of the client's randomness (dropout masks,
bottleneck eps, DP noise, pruning mask), whether the attacker knows it, estimates it,
reads it off the update, ignores it or leaves it out (see :mod:`jgi.attacks.mimic`,
which turns a :class:`Knowledge` into a runner problem).

:class:`Estimator` is what an attack that *estimates* one of them supplies: how the
estimate starts, how it is regularised and how it is projected after each step. Each
lives in its paper's module (:data:`jgi.attacks.dia.ESTIMATOR`,
:data:`jgi.attacks.vbia.ESTIMATOR`, :data:`jgi.attacks.dpia.ESTIMATOR`) and
:mod:`jgi.attacks.mimic` composes the ones :class:`Knowledge` switches on. This module
holds both so that those attack modules and ``mimic`` can import them without importing
one another.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Literal, NamedTuple

import jax

from jgi.defenses.stack import DefenseStack
from jgi.models.interface import Model

DropoutMode = Literal["ignore", "known", "estimate"]
BottleneckMode = Literal["ignore", "known", "estimate", "exclude"]
DPMode = Literal["ignore", "known", "estimate", "fresh"]
PruneMode = Literal["ignore", "observed"]

MODES: dict[str, tuple[str, ...]] = {
    "dropout": typing.get_args(DropoutMode),
    "bottleneck": typing.get_args(BottleneckMode),
    "dp": typing.get_args(DPMode),
    "prune": typing.get_args(PruneMode),
}


@dataclasses.dataclass(frozen=True)
class Knowledge:
    """What the attacker knows about, or does with, each source of client randomness.

    Attributes:
      dropout: "ignore" (fresh masks every step), "known" (the client's masks),
        "estimate" (relaxed masks optimised: DIA).
      bottleneck: "ignore" (fresh eps), "known", "estimate" (VBIA), "exclude" (PIG).
      dp: "ignore" (no DP on the dummy update), "known" (client's noise: WIIG),
        "estimate" (noise optimised: DPIA), "fresh" (the client's DP transform applied
        to the dummy update with noise drawn afresh every iteration: candidate (1) for
        the core paper's DP rows, what a gradient routine shared by client and attacker
        would do; never a default, see :mod:`jgi.attacks.authors`).
      prune: "ignore" or "observed" (the client's mask, read off the update: GPIA).
      mask_reg_weight: DIA's mask regulariser weight (1e-4).
      dp_reg_weight: DPIA's noise regulariser weight (1e-4, our choice).
      estimate_lr_scale: factor on the optimiser's step for every estimate (masks, eps,
        Xi), the image's step unchanged. 1 (default) is one learning rate for all, as
        the papers state; 0.1 is candidate (3)'s "eps and mask learning rate 0.1" with
        the image at IG's 1 (:mod:`jgi.attacks.authors`).
      signed_estimates: feed the sign of the estimates' gradient to Adam, as the image's
        is (default False: the DIA authors' code signs the image only); candidate (3).

    Raises:
      ValueError: on construction, for a mode that is not one of the field's valid
        values (listed in the message; :data:`MODES` holds them).
    """

    dropout: DropoutMode = "ignore"
    bottleneck: BottleneckMode = "ignore"
    dp: DPMode = "ignore"
    prune: PruneMode = "ignore"
    mask_reg_weight: float = 1e-4
    dp_reg_weight: float = 1e-4
    estimate_lr_scale: float = 1.0
    signed_estimates: bool = False

    def __post_init__(self):
        for field, valid in MODES.items():
            value = getattr(self, field)
            if value not in valid:
                raise ValueError(f"Knowledge.{field}={value!r} is not one of {', '.join(valid)}.")
        if not self.estimate_lr_scale > 0:
            raise ValueError(f"Knowledge.estimate_lr_scale must be > 0 (a factor on the "
                             f"estimates' step; 1 = the image's), got {self.estimate_lr_scale}.")
        if not isinstance(self.signed_estimates, bool):
            raise ValueError(f"Knowledge.signed_estimates must be True or False, got "
                             f"{self.signed_estimates!r}.")

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


class Regularizer(NamedTuple):
    """A penalty on one estimate: the objective adds ``weight(knowledge) * fn(estimate, ...)``.

    Attributes:
      name: key of the unweighted penalty in the objective's ``aux`` (e.g. "mask_reg").
      fn: ``(estimate, model, stack) -> scalar``, unweighted.
      weight: ``knowledge -> float``, its weight (a :class:`Knowledge` field, so a run
        can change it).
    """

    name: str
    fn: Callable[[Any, Model, DefenseStack], jax.Array]
    weight: Callable[[Knowledge], float]


class Estimator(NamedTuple):
    """One source of client randomness that an attack optimises jointly with the image.

    Pure functions, for one victim (the runner vmaps them); the estimate is a pytree in
    the candidate, next to the image ``"x"``, and is optimised by the same optimiser.

    Attributes:
      name: key of the estimate in the candidate, and so in ``AttackResult.best``
        ("masks", "eps", "xi").
      randomness: the :class:`Knowledge` field whose value ``"estimate"`` switches the
        estimator on ("dropout", "bottleneck", "dp").
      salt: the estimate's initial key is ``jax.random.fold_in(key, salt)``, ``key``
        being the victim's init key (the image is drawn from ``key`` itself). Distinct
        per estimator, and never 0.
      init: ``(key, model, stack, context, input_shape) -> estimate``; ``context`` is
        the runner's (``context["params"]`` the attacked parameters).
      regularizer: a :class:`Regularizer`, or None.
      project: ``estimate -> estimate`` after every step (after the image's box
        projection), or None.
    """

    name: str
    randomness: str
    salt: int
    init: Callable[[jax.Array, Model, DefenseStack, Any, tuple[int, int, int]], Any]
    regularizer: Regularizer | None = None
    project: Callable[[Any], Any] | None = None
