"""The stage supervisor: each worker that exits is reported and started again, the others untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: A worker that notes its pid, then sleeps until it is signalled.
WORKER = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(600)"


def run_supervisor(tmp_path: Path, workers: int) -> subprocess.Popen[bytes]:
    """``supervise`` in a process of its own (it owns SIGTERM), noting each worker's exit."""
    script = textwrap.dedent(f"""
        import sys
        from streams.changes.supervisor import supervise

        def noted(index):
            with open({str(tmp_path / "exits")!r}, "a") as exits:
                exits.write(f"{{index}}\\n")

        folder = {str(tmp_path)!r}
        commands = [[sys.executable, "-c", {WORKER!r}, f"{{folder}}/worker-{{i}}"] for i in range({workers})]
        sys.exit(supervise(commands, on_exit=noted))
    """)
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO)


def pids(path: Path, count: int, timeout: float = 30) -> list[int]:
    """The pids the worker noted in ``path``, once there are ``count``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        noted = [int(line) for line in path.read_text().split()] if path.exists() else []
        if len(noted) >= count:
            return noted
        time.sleep(0.05)
    raise TimeoutError(f"{path.name} has not started {count} times in {timeout} s")


def exits(tmp_path: Path) -> list[int]:
    path = tmp_path / "exits"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_dead_worker_is_reported_and_started_again_while_the_others_run_on(tmp_path):
    supervisor = run_supervisor(tmp_path, workers=2)
    try:
        (first,) = pids(tmp_path / "worker-0", 1)
        (other,) = pids(tmp_path / "worker-1", 1)
        os.kill(first, signal.SIGKILL)
        _, restarted = pids(tmp_path / "worker-0", 2)
        assert restarted != first
        assert exits(tmp_path) == [0]
        assert pids(tmp_path / "worker-1", 1) == [other]
        os.kill(other, 0)  # still running

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        # Both stopped, and each reported, so that the group forgets them at once too.
        assert sorted(exits(tmp_path)) == [0, 0, 1]
        for pid in (restarted, other):
            assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its supervisor"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
