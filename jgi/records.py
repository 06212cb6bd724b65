"""The rows of ``results.jsonl`` as frozen dataclasses: one attack or utility result.

The JSON schema of both is documented in ``docs/results-schema.md``; a row is written
with :meth:`AttackRow.to_json` / :meth:`UtilityRow.to_json` and read back with
:func:`from_json`, which accepts rows of earlier versions (fields they lack take their
defaults). Tables (:mod:`jgi.tables`) and figures read these objects, not string keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

RowKind = Literal["attack", "utility"]


@dataclasses.dataclass(frozen=True)
class AttackRow:
    """One attack on one victim set: privacy columns of a defense stack.

    Attributes:
      row_id: hash of the row's identity (``config``); a rerun reuses the row.
      model, dataset: registry names.
      defenses: names of the stack's defenses, canonical order.
      encoding: the input encoding ("mixup", "instahide") or None.
      attack: attack name (``jgi.attacks.ATTACKS``).
      knowledge: what the attacker knew of each source of randomness.
      seed: the run's seed.
      n_victims: victims attacked.
      ssim_mean, ssim_std, psnr_mean, psnr_std, mse_mean, mse_std: over victims.
      asr: share of victims with SSIM > 0.5.
      per_victim_ssim, per_victim_psnr, per_victim_mse: one value per victim.
      ssim_authors_mean, ssim_authors_std, asr_authors, per_victim_ssim_authors: the
        same with the ablation paper's authors' SSIM (:func:`jgi.metrics.ssim_authors`:
        per-image min-max scaling of both images, Gaussian window 11 / 1.5); None and
        () in rows made before it was recorded.
      layout: the data/model layout ("jgi" or "authors", ``jgi.data.LAYOUTS``); "jgi"
        in rows made before layouts existed.
      iterations: attack iterations per victim; iterations_mean their mean.
      stop_reasons: victims per stop reason.
      best_loss_mean: mean of the victims' best attack loss.
      label_accuracy: share of labels recovered (iDLG), None when labels were given.
      victim_indices: indices of the victims in the training set.
      wall_seconds, compile_seconds: attack time, compile included / compile only.
      device: what ran it; data_origin: the data files' origin; created: ISO time.
      config: the row's identity plus the preset name.
    """

    model: str
    dataset: str
    defenses: tuple[str, ...]
    attack: str
    per_victim_ssim: tuple[float, ...]
    row_id: str = ""
    encoding: str | None = None
    knowledge: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    n_victims: int = 0
    ssim_mean: float | None = None
    ssim_std: float | None = None
    psnr_mean: float | None = None
    psnr_std: float | None = None
    mse_mean: float | None = None
    mse_std: float | None = None
    asr: float | None = None
    per_victim_psnr: tuple[float, ...] = ()
    per_victim_mse: tuple[float, ...] = ()
    ssim_authors_mean: float | None = None
    ssim_authors_std: float | None = None
    asr_authors: float | None = None
    per_victim_ssim_authors: tuple[float, ...] = ()
    layout: str = "jgi"
    iterations: tuple[int, ...] = ()
    iterations_mean: float | None = None
    stop_reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    best_loss_mean: float | None = None
    label_accuracy: float | None = None
    victim_indices: tuple[int, ...] = ()
    wall_seconds: float | None = None
    compile_seconds: float | None = None
    device: str = ""
    data_origin: str = ""
    created: str = ""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    accuracy: None = None
    kind: Literal["attack"] = "attack"

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclasses.dataclass(frozen=True)
class UtilityRow:
    """One federated training of a defense stack: the accuracy column.

    Attributes:
      row_id, model, dataset, defenses, encoding, seed, device, data_origin, created,
        config: as in :class:`AttackRow`.
      accuracy: test accuracy at the round with the best mean validation loss.
      final_accuracy, max_accuracy: at the last round; the best of all rounds.
      best_round, rounds: 1-based best round; rounds run.
      stopped_early: whether the patience rule ended training.
      layout: as in :class:`AttackRow`.
      history: per round: train_loss, val_loss, test_accuracy.
      wall_seconds: training time; samples_per_second: training throughput.
    """

    model: str
    dataset: str
    defenses: tuple[str, ...]
    accuracy: float
    row_id: str = ""
    encoding: str | None = None
    seed: int = 0
    layout: str = "jgi"
    final_accuracy: float | None = None
    max_accuracy: float | None = None
    best_round: int = 0
    rounds: int = 0
    stopped_early: bool = False
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    wall_seconds: float | None = None
    samples_per_second: float | None = None
    device: str = ""
    data_origin: str = ""
    created: str = ""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    attack: None = None
    kind: Literal["utility"] = "utility"

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


Row = AttackRow | UtilityRow
_TUPLES = ("defenses", "per_victim_ssim", "per_victim_psnr", "per_victim_mse", "iterations",
           "victim_indices", "per_victim_ssim_authors")


def _to_json(row: Row) -> dict[str, Any]:
    out = {}
    for field in dataclasses.fields(row):
        value = getattr(row, field.name)
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def from_json(data: dict[str, Any] | Row) -> Row:
    """A row of ``results.jsonl`` (a dict) as an :class:`AttackRow` or :class:`UtilityRow`.

    Rows without ``kind`` are attack rows (the oldest files). Unknown keys are ignored;
    missing ones take their defaults. ``encoding`` missing is read off ``defenses``.

    Raises:
      ValueError: a required field is missing (names it and the row's kind).
    """
    if isinstance(data, (AttackRow, UtilityRow)):
        return data
    kind = data.get("kind", "attack")
    if kind not in ("attack", "utility"):
        raise ValueError(f"Unknown row kind {kind!r}; valid: attack, utility.")
    cls = AttackRow if kind == "attack" else UtilityRow
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: (tuple(v) if k in _TUPLES and v is not None else v)
              for k, v in data.items() if k in names}
    values["kind"] = kind
    if "encoding" not in data:
        values["encoding"] = next((d for d in data.get("defenses", ())
                                   if d in ("mixup", "instahide")), None)
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in values]
    if missing:
        raise ValueError(f"A {kind} row needs {', '.join(missing)}; got keys {sorted(data)}.")
    return cls(**values)
