"""A write from a forked child: its exit status reaches the parent, a stop ends it, and the
parent's memory it writes is the memory as of the fork."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from query_api.forked_write import write_in_child


def wait_for(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def test_the_child_writes_the_memory_as_it_was_at_the_fork(tmp_path: Path) -> None:
    table = {"a": 1}
    go = tmp_path / "go"

    def write() -> None:
        wait_for(go)  # until the parent has changed its table
        (tmp_path / "out").write_text(repr(sorted(table.items())))

    writing = write_in_child(write, "the table")
    table["b"] = 2
    go.touch()
    writing.wait()
    assert (tmp_path / "out").read_text() == "[('a', 1)]"


def test_a_failed_write_is_an_os_error_that_names_what_was_written(tmp_path: Path) -> None:
    def write() -> None:
        raise ValueError("no room")

    writing = write_in_child(write, "the graph")
    with pytest.raises(OSError, match="the process writing the graph ended with status 1"):
        writing.wait()


def test_a_killed_child_is_reported_by_its_signal(tmp_path: Path) -> None:
    started = tmp_path / "started"

    def write() -> None:
        started.touch()
        time.sleep(60)

    writing = write_in_child(write, "the graph")
    wait_for(started)
    os.kill(writing.pid, 9)
    with pytest.raises(OSError, match="ended with signal 9"):
        writing.wait()


def test_a_stop_ends_the_child_and_reaps_it(tmp_path: Path) -> None:
    writing = write_in_child(lambda: time.sleep(60), "the graph")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(InterruptedError, match="stopped while writing the graph"):
        writing.wait(stop)
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(writing.pid, os.WNOHANG)


def test_the_child_dies_with_the_thread_that_forked_it(tmp_path: Path) -> None:
    forked: list = []
    started = tmp_path / "started"

    def write() -> None:
        started.touch()
        time.sleep(60)

    def fork_and_end() -> None:
        forked.append(write_in_child(write, "the graph"))
        wait_for(started)

    thread = threading.Thread(target=fork_and_end)
    thread.start()
    thread.join()
    # The forking thread has ended: Linux sent the child its parent-death signal.
    with pytest.raises(OSError, match="ended with signal 9"):
        forked[0].wait()
