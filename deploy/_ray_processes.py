"""Which processes belong to a Ray node started on this host, found through /proc."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["node_processes"]


def _session_and_state(pid: int) -> tuple[int, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:  # exited meanwhile
        return None
    return int(fields[3]), fields[0]


def _writes_under(pid: int, prefix: str) -> bool:
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
    return False


def node_processes(home: Path, session: int | None) -> set[int]:
    """Live (not zombie) processes of the Ray node in `home` whose ``ray start`` led `session`.

    Ray's daemons stay in that session; its workers get process groups of their own but keep the
    session too, and write their output to logs under `home` (which finds one that left the
    session). Neither the command line nor the environment can tell: workers rename themselves
    (``ray::ConsumerActor``) over both.
    """
    prefix = f"{home}/"
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        status = _session_and_state(pid)
        if status is None or status[1] in ("Z", "X"):
            continue
        if status[0] == session or _writes_under(pid, prefix):
            found.add(pid)
    return found
