import os

import pytest

from jgi import results

fcntl = pytest.importorskip("fcntl")  # the lock is POSIX-only


def test_a_second_run_is_kept_out_of_a_busy_folder_and_let_in_afterwards(tmp_path):
    with results.lock_workdir(tmp_path):
        with pytest.raises(results.FolderBusyError, match=f"pid {os.getpid()}"):
            with results.lock_workdir(tmp_path):
                pass
        assert results.read_rows(tmp_path / "results.jsonl") == []  # nothing touched
    with results.lock_workdir(tmp_path):  # released: the next run gets in
        results.append_row(tmp_path / "results.jsonl", {"row_id": "a"})
    assert [r["row_id"] for r in results.read_rows(tmp_path / "results.jsonl")] == ["a"]


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(KeyError):
        with results.lock_workdir(tmp_path):
            raise KeyError("boom")
    with results.lock_workdir(tmp_path):
        pass


def test_sigterm_raises_keyboard_interrupt_inside_the_block_only():
    import signal
    import time

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with results.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs at the next bytecode boundary
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is before


def test_keyed_rows_skip_a_finished_identity_and_only_that_one(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"n": 8, "ssim": 0.1}\n')  # an old row without row_id
    store = results.KeyedRows(path, report=False)
    a = {"n": 8, "iterations": 100, "seed": 0}
    assert not store.done(a)  # the id-less row does not count as this run
    store.add(a, {"n": 8, "ssim": 0.5, "iteration": 50})
    store.add(a, {"n": 8, "ssim": 0.7, "iteration": 100})  # a second snapshot, same run
    again = results.KeyedRows(path, report=False)  # what a rerun sees
    assert again.done(a)
    assert not again.done({**a, "seed": 1})  # any setting that differs is another run
    rows = again.rows()
    assert [r.get("ssim") for r in rows] == [0.1, 0.5, 0.7]
    assert rows[1]["row_id"] == rows[2]["row_id"] == results.row_id(a)
    with pytest.raises(ValueError, match="hashes to"):
        again.add(a, {"row_id": "something-else"})
