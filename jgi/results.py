"""Experiment records: ``results.jsonl`` rows, written atomically, and their identity.

A row is one finished (model, dataset, defense stack, attack, seed, settings) run. It
is written by replacing the whole file with a copy that has the new line appended
(write to a temporary file, fsync, ``os.replace``), so an interruption at any moment
leaves either the old or the new file, never a torn line.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

DEFENSE_ORDER = ("dropout", "dp", "prune", "precode", "cvb")


def canonical_defenses(defenses: Iterable[str]) -> list[str]:
    """Defense names in the canonical order (dropout, dp, prune, precode, cvb)."""
    defenses = list(defenses)
    order = {d: i for i, d in enumerate(DEFENSE_ORDER)}
    return sorted(defenses, key=lambda d: (order.get(d, len(order)), d))


def row_id(identity: dict[str, Any]) -> str:
    """A short stable hash of everything that determines a row's result."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads ``results.jsonl``; a missing file has no rows.

    Raises:
      ValueError: a line is not valid JSON (names the file and line).
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n} is not valid JSON ({e}).") from e
    return rows


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_row(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Appends one JSON row to ``path`` atomically."""
    path = Path(path)
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    _atomic_write(path, existing + json.dumps(row, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes a text file atomically (tables, summaries)."""
    _atomic_write(Path(path), text)
