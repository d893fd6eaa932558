"""Consumers yield the CPU to searches: every thread of theirs runs at a lower priority."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _priorities_after(niceness: int) -> list[int]:
    # In a child process: niceness cannot be raised back, and the test runner must keep its own.
    script = textwrap.dedent(
        f"""
        import os, threading
        from pathlib import Path
        from consumers.actors import lower_priority

        ready, done = threading.Event(), threading.Event()
        before = threading.Thread(target=lambda: (ready.set(), done.wait()))
        before.start(); ready.wait()
        lower_priority({niceness})
        after = threading.Thread(target=done.wait)
        after.start()
        tids = [int(t.name) for t in Path("/proc/self/task").iterdir()]
        print(" ".join(str(os.getpriority(os.PRIO_PROCESS, tid)) for tid in tids))
        done.set()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return [int(value) for value in out.stdout.split()]


def test_every_thread_old_and_new_runs_at_the_niceness_asked() -> None:
    priorities = _priorities_after(7)

    assert len(priorities) >= 3  # the main thread, one started before, one after
    assert set(priorities) == {max(7, os.getpriority(os.PRIO_PROCESS, 0))}


def test_niceness_zero_leaves_the_priority_alone() -> None:
    assert set(_priorities_after(0)) == {os.getpriority(os.PRIO_PROCESS, 0)}
