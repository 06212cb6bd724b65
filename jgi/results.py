"""Experiment records: ``results.jsonl`` rows, written atomically, and their identity.

A row is one finished (model, dataset, defense stack, attack, seed, settings) run. It
is written by replacing the whole file with a copy that has the new line appended
(write to a temporary file, fsync, ``os.replace``), so an interruption at any moment
leaves either the old or the new file, never a torn line.

Appending rewrites the file, so two processes appending to one folder at once could
each drop the other's row; :func:`lock_workdir` keeps a second run out of a folder
that a live run is writing to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run per folder is on the user
    fcntl = None

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


def append_row(path: str | os.PathLike, row: dict[str, Any], *, report: bool = True) -> None:
    """Appends one JSON row to ``path`` atomically, then refreshes the run report.

    When ``path`` is a ``.jsonl`` file (and ``report``), ``report.html`` beside it is
    rewritten (:func:`jgi.report.write_report_safely`) after the row is on disk, so
    every experiment that appends rows gets the report; a report failure is logged and
    never loses or breaks the row. ``JGI_REPORT=0`` switches it off.
    """
    path = Path(path)
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    _atomic_write(path, existing + json.dumps(row, sort_keys=True) + "\n")
    if report and path.suffix == ".jsonl":
        from jgi import report as run_report  # same layer; imported late (it imports this)
        run_report.write_report_safely(path.parent, path.name)


class KeyedRows:
    """An experiment's rows file, keyed by everything that determines a run's result.

    The resumable-experiment pattern in one place: a run is identified by an
    ``identity`` dict (every setting that changes its result: model, data, sizes,
    iterations, seed, ...); :meth:`add` appends its row(s) with ``row_id`` =
    :func:`row_id` of that identity, and a rerun asks :meth:`done` before repeating
    the work. A run may write several rows (one per snapshot or method) under one
    identity; it counts as done once any of them is on disk, since every row is
    appended atomically after the run finished. Rows without a ``row_id`` (written by
    older code) are kept and listed but never count as done, so their runs repeat
    rather than being matched on a partial key.

        store = results.KeyedRows(workdir / "rows.jsonl")
        for n in sizes:
            ident = {"n": n, "iterations": args.iterations, "seed": args.seed}
            if store.done(ident):
                continue
            store.add(ident, {"n": n, "ssim": run(n)})
        print(table(store.rows()))
    """

    def __init__(self, path: str | os.PathLike, *, report: bool = True):
        self.path = Path(path)
        self.report = report
        self._ids = {r["row_id"] for r in read_rows(self.path) if r.get("row_id")}

    def done(self, identity: dict[str, Any]) -> bool:
        """Whether a run with exactly this identity already wrote its row(s)."""
        return row_id(identity) in self._ids

    def add(self, identity: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """Appends ``row`` (atomically) tagged with the identity's ``row_id``; returns it.

        Raises:
          ValueError: ``row`` already carries a different ``row_id``.
        """
        rid = row_id(identity)
        if row.get("row_id", rid) != rid:
            raise ValueError(f"row carries row_id {row['row_id']!r} but its identity "
                             f"hashes to {rid!r}; drop the row's own row_id or pass the "
                             "identity it was made from.")
        row = {**row, "row_id": rid}
        append_row(self.path, row, report=self.report)
        self._ids.add(rid)
        return row

    def rows(self) -> list[dict[str, Any]]:
        """Every row in the file, in the order written (older id-less rows included)."""
        return read_rows(self.path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes a text file atomically (tables, summaries)."""
    _atomic_write(Path(path), text)


LOCK_NAME = ".lock"


class FolderBusyError(RuntimeError):
    """Another live run holds the output folder (see :func:`lock_workdir`)."""


@contextlib.contextmanager
def lock_workdir(workdir: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``workdir`` for the duration of a run.

    Two runs writing one folder would train the same rows twice, race on their
    checkpoints and, since an append rewrites ``results.jsonl``, could drop each other's
    finished rows. The lock (``flock`` on ``<workdir>/.lock``) is released when the run
    ends or its process dies, so a killed run never leaves a stale lock behind.

    Raises:
      FolderBusyError: another live process holds the folder (names its pid).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    path = workdir / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise FolderBusyError(
                f"Another run (pid {holder}) is writing to {workdir}. Two runs in one "
                "folder would repeat the same rows and could overwrite each other's "
                "results; wait for that run to finish or stop it (it can be resumed), or "
                "pass a different output folder.") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, ``kill`` (SIGTERM) raises KeyboardInterrupt like Ctrl-C does.

    So a killed run takes the same exit as an interrupted one: its finished rows are
    already on disk, and the command's interrupt handler says how to resume. The previous
    handler comes back on exit. Only in the main thread (elsewhere a no-op).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        del signum, frame
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
