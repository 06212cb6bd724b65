"""Periodic checkpoints of long runs (attacks, federated training) so they resume.

A run's state is a pytree of arrays; it is written with orbax's ``StandardCheckpointer``
to ``<directory>/step_<n>`` at most every ``every_seconds`` and restored on the next run
with the same directory. Only the newest step is kept. A checkpoint whose structure or
shapes do not match the run is refused rather than silently reused.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np


def _attack_step(state: Any) -> int:
    return int(np.max(np.asarray(state.iteration)))


class PeriodicCheckpoint:
    """Periodic checkpoint of one run's state.

    Args:
      directory: folder for this run's checkpoints (one run per folder).
      every_seconds: minimum wall time between two saves.
      step_of: the step number of a state (names the checkpoint, reported on restore).
    """

    def __init__(self, directory: str | Path, every_seconds: float = 60.0,
                 step_of: Callable[[Any], int] = _attack_step):
        self.directory = Path(directory).absolute()
        self.every_seconds = every_seconds
        self.step_of = step_of
        self._last_save = time.monotonic()
        self.restored_step: int | None = None

    @property
    def restored_iteration(self) -> int | None:
        return self.restored_step

    def _steps(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        steps = [p for p in self.directory.iterdir()
                 if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
        return sorted(steps, key=lambda p: int(p.name[5:]))

    def restore(self, template: Any) -> Any:
        """Returns the newest saved state, or ``template`` when there is none."""
        steps = self._steps()
        if not steps:
            return template
        import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            with ocp.StandardCheckpointer() as ckptr:
                state = ckptr.restore(steps[-1], abstract)
        except Exception as e:
            raise ValueError(
                f"Checkpoint {steps[-1]} does not match this run ({type(e).__name__}: "
                f"{str(e)[:300]}). Delete {self.directory} to start afresh."
            ) from e
        self.restored_step = self.step_of(state)
        return state

    def save(self, state: Any) -> None:
        import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
        step = self.step_of(state)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"step_{step}"
        if target.exists():
            return
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(target, state)
            ckptr.wait_until_finished()
        for old in self._steps():
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        self._last_save = time.monotonic()

    def due(self) -> bool:
        """Whether ``every_seconds`` have passed since the last save."""
        return time.monotonic() - self._last_save >= self.every_seconds

    def maybe_save(self, state: Any) -> None:
        """Saves when :meth:`due`."""
        if self.due():
            self.save(state)

    def clear(self) -> None:
        """Deletes the checkpoints (after the run's result has been recorded)."""
        shutil.rmtree(self.directory, ignore_errors=True)


class AttackCheckpoint(PeriodicCheckpoint):
    """Checkpoint of an attack's runner state, named by its furthest iteration."""


PIECES_PER_ROUND_MAX = 1_000_000  # FedAvg step numbers: round * this + pieces done


def fedavg_checkpoint(directory: str | Path, every_seconds: float = 60.0) -> PeriodicCheckpoint:
    """Checkpoint of a FedAvg run's ``{"state", "history"}``.

    Named by ``round * PIECES_PER_ROUND_MAX + piece`` (the pieces of the running round
    already done, 0 at a round boundary); :func:`fedavg_position` reads it back.
    """
    return PeriodicCheckpoint(
        directory, every_seconds,
        step_of=lambda s: (int(np.asarray(s["state"].round)) * PIECES_PER_ROUND_MAX
                           + int(np.asarray(s["state"].piece))))


def fedavg_position(step: int) -> str:
    """Where a FedAvg checkpoint's step number stands, in words."""
    rounds, piece = divmod(step, PIECES_PER_ROUND_MAX)
    if piece == 0:
        return f"after round {rounds}"
    return f"in round {rounds + 1}, after {piece} piece(s) of its local training"
