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
