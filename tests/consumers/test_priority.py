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


def _autogroups_enabled() -> bool:
    setting = Path("/proc/sys/kernel/sched_autogroup_enabled")
    return setting.exists() and setting.read_text().strip() == "1"


def _group_of_runner() -> str:
    # The kernel prints nothing for the root group, the one of sessions started from init (as a
    # CI runner's may be); any other group reads "/autogroup-<id> nice <n>".
    group = Path("/proc/self/autogroup")
    text = group.read_text().strip() if group.exists() else ""
    return text.split()[0] if text else "root"


def test_with_autogroups_the_consumer_lowers_a_session_group_of_its_own() -> None:
    # Nice weighs only within a session's group, so the group is what must weigh less than the
    # API's; the session it leaves (Ray's, in a real run; here the test runner's) keeps its own.
    script = textwrap.dedent(
        """
        import os
        from pathlib import Path
        from consumers.actors import lower_priority

        lower_priority(9)
        group = Path("/proc/self/autogroup")
        print(os.getsid(0) == os.getpid(), group.read_text().strip() if group.exists() else "none")
        """
    )
    before = _group_of_runner()
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    own_session, group = out.stdout.strip().split(" ", 1)

    if _autogroups_enabled():
        assert own_session == "True"
        assert group.endswith("nice 9")
        assert group.split()[0] != before
        assert _group_of_runner() == before
    else:  # the kernel weighs threads alone: nothing to move
        assert own_session == "False"


def test_a_process_group_leader_as_ray_makes_each_worker_runs_its_threads_idle() -> None:
    # A group leader cannot start a session; SCHED_IDLE is the lever left that weighs across
    # sessions: its threads run only when no other thread wants the CPU, and yield at once.
    script = textwrap.dedent(
        """
        import os, threading
        from pathlib import Path
        from consumers.actors import lower_priority

        os.setpgid(0, 0)
        done = threading.Event()
        threading.Thread(target=done.wait).start()
        lower_priority(9)
        tids = [int(t.name) for t in Path("/proc/self/task").iterdir()]
        print(os.getsid(0) == os.getpid(), *(os.sched_getscheduler(tid) for tid in tids))
        done.set()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    own_session, *policies = out.stdout.split()

    assert own_session == "False"
    if _autogroups_enabled():
        assert len(policies) >= 2 and set(policies) == {str(os.SCHED_IDLE)}
    else:  # nice alone does the work
        assert set(policies) == {str(os.SCHED_OTHER)}
