"""An ablation run's settings: :class:`AblationConfig`, its presets and named keys.

Presets follow big_vision's ``runlocal`` idea: ``paper`` is the core paper's scale
(Scheliga et al., "Combining stochastic defenses ...", section 5: 128 victims, the
full IG schedule, FedAvg up to 300 rounds, 3 seeds), ``cpu`` a reduced scale for
2 CPU cores, ``smoke`` minutes on a laptop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

import jax

from jgi import data, defenses
from jgi.attacks import ig
from jgi.fl import fedavg

LabelMode = Literal["known", "idlg"]
LABEL_MODES = ("known", "idlg")


_PIECE_STEPS = fedavg.PIECE_STEPS  # (the class body's field ``fedavg`` shadows the module)


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """One ablation run's settings (defaults: the core paper's).

    Attributes:
      model: registry name (``jgi.models.MODELS``).
      model_options: extra options for the model factory, e.g. (("padding", "VALID"),).
        With ``layout="authors"`` the layout's own options (:data:`LAYOUT_MODEL_OPTIONS`)
        are merged in here by ``__post_init__``, so the rows record them.
      dataset: ``jgi.data.DATASETS`` name.
      layout: "jgi" (default: native shapes, MNIST 28x28x1, the CNN with SAME padding)
        or "authors" (the ablation paper's authors' layout, AUTHORS-CODE.md: every
        image 32x32x3, MNIST resized and repeated over 3 channels, the CNN with VALID
        padding: 65,962 parameters). One flag for a whole table; recorded in every
        row's identity when not "jgi", so rows of the two layouts never share an id.
      stacks: the defense stacks to evaluate, each a tuple of defense names.
      attack: attack name (``jgi.attacks.ATTACKS``; the paper's tables use CDIA).
      victims: number of victim images (paper: 128).
      seed: the first seed; one seed fixes split, victims, model initialisation, the
        clients' randomness, the attack and the federated training (:class:`RunKeys`).
      seeds: number of seeds (seed, seed + 1, ...); the paper reports 3.
      labels: "known" (paper) or "idlg" (recovered from the classifier gradient).
      dropout_rate, dp, prune_rate: defense settings (paper: 0.25, tau 20 / sigma 1e-4,
        0.5).
      num_clients, val_fraction, victim_client: the federated split (paper: 10, 0.1, 0).
      ig: the attack's hyperparameters.
      fedavg: federated-training settings for the utility columns, or None to skip them.
      fedavg_data_cap: (train images per client, validation images per client, test
        images) the utility rows use at most, or None for all (the smoke preset caps
        them, whatever the data source).
      privacy: run the attacks (False: utility only).
      preset: the preset the settings came from (recorded only).
      data_dir, data_source, verify: where the data come from.
      progress: show progress bars.
      checkpoint_seconds: how often a running attack or FedAvg run saves its state
        (at most once per this many seconds; an interrupt saves at once). Does not
        change any result.
      fedavg_piece_steps: local steps per piece of a FedAvg round (the run checks for a
        stop request and may save between pieces). Does not change any result.
    """

    model: str = "cnn"
    model_options: tuple[tuple[str, Any], ...] = ()
    dataset: str = "mnist"
    layout: str = "jgi"
    stacks: tuple[tuple[str, ...], ...] = ((),)
    attack: str = "cdia"
    victims: int = 128
    seed: int = 0
    seeds: int = 1
    labels: LabelMode = "known"
    dropout_rate: float = defenses.stack.PAPER_DROPOUT_RATE
    dp: defenses.DPConfig = defenses.stack.PAPER_DP
    prune_rate: float = defenses.stack.PAPER_PRUNE_FRACTION
    num_clients: int = 10
    val_fraction: float = 0.1
    victim_client: int = 0
    ig: ig.IGConfig = ig.IGConfig()
    fedavg: fedavg.FedAvgConfig | None = None
    fedavg_data_cap: tuple[int, int, int] | None = None
    privacy: bool = True
    preset: str = "paper"
    data_dir: str | None = None
    data_source: str = "auto"
    verify: bool = True
    progress: bool = True
    checkpoint_seconds: float = 60.0
    fedavg_piece_steps: int = _PIECE_STEPS

    def __post_init__(self):
        if self.layout not in data.LAYOUTS:
            raise ValueError(f"Unknown layout {self.layout!r} (--layout); valid: "
                             f"{', '.join(data.LAYOUTS)} (jgi: native shapes; authors: "
                             "32x32x3 and the CNN with VALID padding, as the paper's "
                             "authors ran it).")
        merged = dict(self.model_options)
        for key, value in LAYOUT_MODEL_OPTIONS[self.layout].get(self.model, ()):
            if merged.get(key, value) != value:
                raise ValueError(f"layout {self.layout!r} sets the {self.model}'s {key} to "
                                 f"{value!r}, but model_options (--model-options) give "
                                 f"{merged[key]!r}; drop one of them.")
            merged[key] = value
        # A frozen dataclass's canonical form: the layout's model options become explicit.
        object.__setattr__(self, "model_options", tuple(merged.items()))
        if self.fedavg_piece_steps < 1:
            raise ValueError(f"fedavg_piece_steps (--piece-steps) must be >= 1, got "
                             f"{self.fedavg_piece_steps}.")
        if not self.checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds (--checkpoint-seconds) must be >= 0, got "
                             f"{self.checkpoint_seconds}.")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"Unknown label mode {self.labels!r}; valid: "
                             f"{', '.join(LABEL_MODES)}.")
        for name in ("victims", "seeds", "num_clients"):
            if getattr(self, name) < 1:
                raise ValueError(f"AblationConfig.{name} must be >= 1, got "
                                 f"{getattr(self, name)}.")
        # Checked whether or not a stack uses them: a typo must not wait for the one row
        # that does (or pass silently when none does).
        for name, flag, what in (("dropout_rate", "--dropout-rate", "a dropout rate"),
                                 ("prune_rate", "--prune-rate", "a pruning fraction"),
                                 ("val_fraction", None, "a validation share")):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                named = f"{name} ({flag})" if flag else name
                raise ValueError(f"{named} is {what} in [0, 1), got {value}; it is "
                                 "checked even when no stack uses it.")
        if self.fedavg_data_cap is not None and (
                len(self.fedavg_data_cap) != 3 or min(self.fedavg_data_cap) < 1):
            raise ValueError("fedavg_data_cap is (train per client, validation per client, "
                             f"test images), each >= 1, or None; got {self.fedavg_data_cap}.")
        if not 0 <= self.victim_client < self.num_clients:
            raise ValueError(f"victim_client must name one of the {self.num_clients} clients "
                             f"(0 to {self.num_clients - 1}), got {self.victim_client}.")

    def stack(self, names: Sequence[str]) -> defenses.DefenseStack:
        return defenses.from_names(names, dropout=self.dropout_rate, dp=self.dp,
                                   prune=self.prune_rate)


# Model options each layout implies, per model (merged into AblationConfig.model_options).
# The authors' CNN uses VALID padding (32 -> 14 -> 5 -> 1, 65,962 parameters); their ViT
# and ResNet-18 need only the 32x32x3 input.
LAYOUT_MODEL_OPTIONS: dict[str, dict[str, tuple[tuple[str, Any], ...]]] = {
    "jgi": {},
    "authors": {"cnn": (("padding", "VALID"),)},
}


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's settings (section 5): 128 victims and the full IG schedule; FedAvg up to
    # 300 rounds with patience 40; 3 seeds. Meant for a GPU.
    "paper": {"victims": 128, "ig": ig.IGConfig(), "fedavg": fedavg.FedAvgConfig(),
              "seeds": 3},
    # A reduced but meaningful scale for 2 CPU cores (the CNN/MNIST 24-row table
    # overnight): 32 victims with the full IG schedule; FedAvg up to 20 rounds with
    # patience 5; one seed.
    "cpu": {"victims": 32, "ig": ig.IGConfig(),
            "fedavg": fedavg.FedAvgConfig(rounds=20, patience=5), "seeds": 1},
    # Minutes on 2 CPU cores: 8 victims, a compressed schedule (plateau after 100
    # iterations, at most 1,000); 2 FedAvg rounds on at most 180 training and 20
    # validation images per client and 500 test images (the embedded sample's sizes),
    # whatever the data source. Reconstructions are recognisable but not converged;
    # accuracies are far from trained.
    "smoke": {"victims": 8, "ig": ig.IGConfig(max_iters=1000, plateau_patience=100,
                                             stop_patience=400, chunk_size=100),
              "fedavg": fedavg.FedAvgConfig(rounds=2, patience=2), "seeds": 1,
              "fedavg_data_cap": (180, 20, 500)},
}


def preset_config(preset: str, **overrides: Any) -> AblationConfig:
    """An :class:`AblationConfig` at a preset's scale, with ``overrides`` applied.

    Raises:
      ValueError: an unknown preset (lists the valid ones).
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; valid: {', '.join(sorted(PRESETS))}.")
    return AblationConfig(**{**PRESETS[preset], "preset": preset, **overrides})


# The run's independent random streams, each the seed's key folded with its index in
# this tuple. The order is part of every recorded result: append, never reorder.
STREAMS = ("split", "victims", "model", "attack", "client", "encoding", "fedavg")


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """A seed's named random streams: ``RunKeys(0).attack`` is the attack's key.

    Every function that needs the split, the model's initialisation or the clients'
    randomness asks for it by name, so two code paths (the attack rows and the utility
    rows) cannot disagree on an index.
    """

    seed: int

    def stream(self, name: str) -> jax.Array:
        if name not in STREAMS:
            raise ValueError(f"Unknown random stream {name!r}; valid: {', '.join(STREAMS)}.")
        return jax.random.fold_in(jax.random.key(self.seed), STREAMS.index(name))

    split = property(lambda self: self.stream("split"))
    victims = property(lambda self: self.stream("victims"))
    model = property(lambda self: self.stream("model"))
    attack = property(lambda self: self.stream("attack"))
    client = property(lambda self: self.stream("client"))
    encoding = property(lambda self: self.stream("encoding"))
    fedavg = property(lambda self: self.stream("fedavg"))


def parse_stacks(spec: str) -> tuple[tuple[str, ...], ...]:
    """``all`` -> the 24 ablation stacks; ``table5`` -> Table 5's; else stacks separated
    by ';', defenses by ',' (``none`` for no defense)."""
    spec = spec.strip()
    if spec == "all":
        return tuple(tuple(s) for s in defenses.ablation_stacks())
    if spec == "table5":
        return tuple(tuple(s) for s in defenses.stack.TABLE5_STACKS)
    return tuple(tuple(defenses.parse_names(part)) for part in spec.split(";"))


def parse_model_options(spec: str | None) -> tuple[tuple[str, Any], ...]:
    """``"padding=VALID,conv_impl=lax"`` -> (("padding", "VALID"), ("conv_impl", "lax")).

    Values that parse as int or float become numbers.
    """
    if not spec:
        return ()
    options = []
    for part in spec.split(","):
        if "=" not in part:
            raise ValueError(f"--model-options expects key=value pairs, got {part!r}.")
        key, value = (p.strip() for p in part.split("=", 1))
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        options.append((key, value))
    return tuple(options)
