"""Saving and restoring a running attack between chunks, so an interrupted run resumes.

The runner state is a pytree of arrays; it is written with orbax's
``StandardCheckpointer`` to ``<directory>/step_<iteration>`` at most every
``every_seconds`` and restored on the next run with the same directory. Only the newest
step is kept. A checkpoint whose shapes do not match the attack being run is refused
rather than silently reused.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np


class AttackCheckpoint:
    """Periodic checkpoint of one attack's runner state.

    Args:
      directory: folder for this attack's checkpoints (one attack per folder).
      every_seconds: minimum wall time between two saves.
    """

    def __init__(self, directory: str | Path, every_seconds: float = 60.0):
        self.directory = Path(directory).absolute()
        self.every_seconds = every_seconds
        self._last_save = time.monotonic()
        self.restored_iteration: int | None = None

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
                f"Checkpoint {steps[-1]} does not match this attack ({type(e).__name__}: "
                f"{str(e)[:300]}). Delete {self.directory} to start the attack afresh."
            ) from e
        self.restored_iteration = int(np.max(np.asarray(state.iteration)))
        return state

    def save(self, state: Any) -> None:
        import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
        iteration = int(np.max(np.asarray(state.iteration)))
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"step_{iteration}"
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
        """Deletes the checkpoints (after the attack's result has been recorded)."""
        shutil.rmtree(self.directory, ignore_errors=True)
