"""A defense stack: which defenses a client uses, with their settings.

The core paper's ablation combines {none, dropout} x {none, DP} x {none, pruning} x
{none, PRECODE, CVB}: 24 stacks (Table 4). Model-level defenses (dropout, a variational
bottleneck) change the forward pass and are built into the model
(``models.get(name, **stack.model_options())``); DP and pruning transform the gradient,
in the order of the paper's Algorithm 2: ``GP(DP(grad))``. MixUp and InstaHide encode
the inputs before all of that.

Paper settings (section 5.3): dropout rate 0.25, DP (tau 20, sigma 1e-4), pruning 0.5,
PRECODE and CVB as recommended by their authors.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable

from jgi.defenses.dp import DPConfig
from jgi.defenses.input_encoding import INSTAHIDE, MIXUP, EncodingConfig
from jgi.models.bottleneck import BOTTLENECKS

DEFENSE_NAMES = ("dropout", "dp", "prune", "precode", "cvb", "mixup", "instahide")

PAPER_DROPOUT_RATE = 0.25
PAPER_DP = DPConfig(clip_norm=20.0, noise_multiplier=1e-4)
PAPER_PRUNE_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class DefenseStack:
    """What a client does to protect its update.

    Attributes:
      dropout: dropout rate (0 = none).
      dp: DP-SGD settings, or None.
      prune: fraction of each layer's entries pruned (0 = none).
      bottleneck: "precode", "cvb" or None.
      encoding: input encoding (MixUp / InstaHide), or None.
    """

    dropout: float = 0.0
    dp: DPConfig | None = None
    prune: float = 0.0
    bottleneck: str | None = None
    encoding: EncodingConfig | None = None

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {self.dropout}.")
        if not 0.0 <= self.prune < 1.0:
            raise ValueError(f"pruning fraction must be in [0, 1), got {self.prune}.")
        if self.bottleneck is not None and self.bottleneck not in BOTTLENECKS:
            raise ValueError(f"Unknown bottleneck {self.bottleneck!r}; valid: "
                             f"{', '.join(BOTTLENECKS)}.")

    @property
    def names(self) -> list[str]:
        """Names of the defenses in use, in the canonical order."""
        out = []
        if self.dropout > 0:
            out.append("dropout")
        if self.dp is not None:
            out.append("dp")
        if self.prune > 0:
            out.append("prune")
        if self.bottleneck is not None:
            out.append(self.bottleneck)
        if self.encoding is not None:
            out.append(self.encoding.kind)
        return out

    def model_options(self) -> dict:
        """Options for ``models.get`` that build the model-level defenses in."""
        options = {}
        if self.dropout > 0:
            options["dropout"] = self.dropout
        if self.bottleneck is not None:
            options["bottleneck"] = self.bottleneck
        return options

    def describe(self) -> dict:
        return {"names": self.names, "dropout": self.dropout,
                "dp": dataclasses.asdict(self.dp) if self.dp else None, "prune": self.prune,
                "bottleneck": self.bottleneck,
                "encoding": dataclasses.asdict(self.encoding) if self.encoding else None}


NO_DEFENSE = DefenseStack()


def parse_names(spec: str | Iterable[str]) -> list[str]:
    """``"dp,cvb"`` or ``["dp", "cvb"]`` -> validated names; "none" or "" -> [].

    Raises:
      ValueError: for an unknown name (listing the valid ones), a repeated name, or an
        incompatible combination (two bottlenecks, two encodings), saying why.
    """
    if isinstance(spec, str):
        names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    else:
        names = [str(n).strip().lower() for n in spec]
    names = [n for n in names if n not in ("none", "")]
    unknown = [n for n in names if n not in DEFENSE_NAMES]
    if unknown:
        raise ValueError(f"Unknown defense(s) {unknown}. Valid defenses: "
                         f"{', '.join(DEFENSE_NAMES)} (or 'none').")
    if len(set(names)) != len(names):
        raise ValueError(f"Defense listed twice in {names}.")
    if "precode" in names and "cvb" in names:
        raise ValueError("PRECODE and CVB are both variational bottlenecks and a model holds "
                         "at most one; use either 'precode' or 'cvb'.")
    if "mixup" in names and "instahide" in names:
        raise ValueError("MixUp and InstaHide are both input encodings (InstaHide is MixUp "
                         "with sign flips); use either 'mixup' or 'instahide'.")
    return names


def from_names(spec: str | Iterable[str], *, dropout: float = PAPER_DROPOUT_RATE,
               dp: DPConfig = PAPER_DP, prune: float = PAPER_PRUNE_FRACTION,
               encoding_k: int | None = None) -> DefenseStack:
    """Builds a :class:`DefenseStack` from names, with the paper's settings by default."""
    names = parse_names(spec)
    encoding = None
    if "mixup" in names:
        encoding = MIXUP if encoding_k is None else dataclasses.replace(MIXUP, k=encoding_k)
    elif "instahide" in names:
        encoding = INSTAHIDE if encoding_k is None else dataclasses.replace(INSTAHIDE,
                                                                            k=encoding_k)
    bottleneck = next((n for n in names if n in BOTTLENECKS), None)
    return DefenseStack(dropout=dropout if "dropout" in names else 0.0,
                        dp=dp if "dp" in names else None,
                        prune=prune if "prune" in names else 0.0,
                        bottleneck=bottleneck, encoding=encoding)


def ablation_stacks() -> list[list[str]]:
    """The paper's 24 combinations, in the row order of its Table 4."""
    stacks = []
    for dropout, dp, prune, pm in itertools.product((False, True), (False, True),
                                                    (False, True), (None, "precode", "cvb")):
        names = ["dropout"] * dropout + ["dp"] * dp + ["prune"] * prune + ([pm] if pm else [])
        stacks.append(names)
    return stacks


# The subset of Table 5 (ResNet-18 and ViT): single defenses and the promising
# combinations; pruning excluded (section 6.2).
TABLE5_STACKS = (
    [], ["precode"], ["cvb"], ["dp"], ["dp", "precode"], ["dp", "cvb"], ["dropout"],
    ["dropout", "dp", "precode"], ["dropout", "dp", "cvb"],
)

