"""Consumers embed at a lower priority while searches run on their host, at full priority otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from consumers.priority import SearchYieldingEncoder, autogroups_enabled
from consumers.search_activity import SearchActivity

ROOT = Path(__file__).resolve().parents[2]
NICENESS = 9


def _thread_priority(thread_id: int | str = "thread-self") -> tuple[int, int]:
    """(nice, policy) of a thread of this process, as the kernel reports them in /proc."""
    where = Path(f"/proc/self/task/{thread_id}") if thread_id != "thread-self" else Path("/proc/thread-self")
    fields = (where / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16]), int(fields[38])


def _low() -> tuple[int, int]:
    # Never a higher priority than the process had: under a nicer test runner, its own.
    nice = max(NICENESS, os.getpriority(os.PRIO_PROCESS, 0))
    return (nice, os.SCHED_IDLE if autogroups_enabled() else os.SCHED_OTHER)


def _normal() -> tuple[int, int]:
    return (os.getpriority(os.PRIO_PROCESS, 0), os.SCHED_OTHER)


class _RecordingEncoder:
    """Encodes a text as its length, and notes the priority of the thread each call ran on."""

    dimension = 2
    batch_size = 4
    precision = "fp32"

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[int, int]]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append((len(texts), _thread_priority()))
        return np.array([[len(text), 1.0] for text in texts], dtype=np.float32)


class _Switch:
    """Stands in for SearchActivity: ``searching()`` answers what the test sets."""

    def __init__(self, answers: list[bool]) -> None:
        self._answers = answers

    def searching(self) -> bool:
        return self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]


def _encoder(activity: object) -> tuple[SearchYieldingEncoder, _RecordingEncoder]:
    inner = _RecordingEncoder()
    return SearchYieldingEncoder(inner, activity, NICENESS), inner  # type: ignore[arg-type]


def test_while_searches_run_the_encode_runs_at_the_lowered_priority(tmp_path: Path) -> None:
    searches = tmp_path / "searching"
    searches.touch()
    encoder, inner = _encoder(SearchActivity(searches, window_s=2.0))

    encoder.encode(["a text"])

    assert [priority for _, priority in inner.calls] == [_low()]
    encoder.close()


def test_with_no_recent_search_the_encode_runs_at_full_priority_again(tmp_path: Path) -> None:
    searches = tmp_path / "searching"
    searches.touch()
    now = [0.0]
    encoder, inner = _encoder(SearchActivity(searches, window_s=2.0, clock=lambda: now[0]))
    encoder.encode(["a text"])
    long_ago = time.time() - 10
    os.utime(searches, (long_ago, long_ago))
    now[0] += 1.0  # past the next look at the file

    encoder.encode(["a text"])

    assert [priority for _, priority in inner.calls] == [_low(), _normal()]
    assert _thread_priority() == _normal()  # the caller's own thread is never lowered
    encoder.close()


def test_with_no_search_ever_the_encode_runs_at_full_priority(tmp_path: Path) -> None:
    encoder, inner = _encoder(SearchActivity(tmp_path / "never-searched", window_s=2.0))

    encoder.encode(["a text"])

    assert [priority for _, priority in inner.calls] == [_normal()]
    encoder.close()


def test_the_priority_follows_the_searches_slice_by_slice_within_one_batch() -> None:
    encoder, inner = _encoder(_Switch([False, True, False]))

    encoder.encode([f"text {i}" for i in range(10)])  # slices of batch_size 4: 4, 4, 2

    assert inner.calls == [(4, _normal()), (4, _low()), (2, _normal())]
    encoder.close()


def test_a_sliced_batch_returns_each_text_its_own_vector_in_the_callers_order() -> None:
    encoder, _ = _encoder(_Switch([False]))
    texts = ["x" * length for length in (3, 17, 1, 9, 30, 2, 11)]

    vectors = encoder.encode(texts)

    assert vectors[:, 0].tolist() == [len(text) for text in texts]
    encoder.close()


def test_each_lanes_openmp_workers_are_born_at_the_lanes_priority() -> None:
    # torch's kernels run on GNU OpenMP workers that belong to the thread starting the parallel
    # region: the low lane's must be lowered too, or most of the work escapes the priority. In a
    # child process, so that the test runner's torch keeps its own thread pool.
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import torch
        from consumers.priority import EncodeLanes

        torch.set_num_threads(2)
        lanes = EncodeLanes({NICENESS})
        work = lambda: float((torch.rand(512, 512) @ torch.rand(512, 512)).sum())
        def threads():
            return {{int(t.name) for t in Path("/proc/self/task").iterdir()}}
        before = threads()
        lanes.run(False, work)
        full = threads() - before
        lanes.run(True, work)
        low = threads() - before - full
        for name, ids in (("full", full), ("low", low)):
            for tid in ids:
                fields = Path(f"/proc/self/task/{{tid}}/stat").read_text().rsplit(")", 1)[1].split()
                print(name, fields[16], fields[38])
        lanes.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()]
    by_lane = {
        lane: {(int(nice), int(policy)) for name, nice, policy in rows if name == lane}
        for lane in ("full", "low")
    }
    counts = {lane: sum(1 for row in rows if row[0] == lane) for lane in ("full", "low")}

    assert counts["full"] >= 2 and counts["low"] >= 2  # each lane's thread and its OpenMP worker
    assert by_lane["full"] == {_normal()}
    assert by_lane["low"] == {_low()}


def test_lowering_the_lane_leaves_every_other_thread_of_the_process_alone() -> None:
    before = {int(t.name): _thread_priority(t.name) for t in Path("/proc/self/task").iterdir()}
    encoder, _ = _encoder(_Switch([True]))
    encoder.encode(["a text"])

    after = {tid: _thread_priority(tid) for tid in before if Path(f"/proc/self/task/{tid}").exists()}

    assert after == {tid: before[tid] for tid in after}
    assert threading.current_thread() is threading.main_thread()
    encoder.close()
