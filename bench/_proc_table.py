"""Every process of this host as /proc shows it at one moment: its parent, resident memory and
CPU time, so that a process tree's memory and CPU can be summed without a library."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Process", "ProcessTable", "command_of", "directory_bytes", "memory_status"]

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    #: User + system CPU seconds of all its threads so far.
    cpu_s: float
    #: Resident set size in bytes (anonymous, file-backed and shared pages).
    rss: int


@dataclass
class ProcessTable:
    """The live (not zombie) processes at ``at`` (``time.monotonic()``)."""

    at: float
    processes: dict[int, Process]
    _children: dict[int, list[int]] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls) -> ProcessTable:
        processes = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                # The command name (in parentheses) may hold spaces: split after its end.
                fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
            except OSError:  # exited meanwhile
                continue
            if fields[0] in ("Z", "X"):
                continue
            pid = int(entry.name)
            cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            processes[pid] = Process(pid, int(fields[1]), cpu_s, int(fields[21]) * PAGE_BYTES)
        table = cls(time.monotonic(), processes)
        children: dict[int, list[int]] = defaultdict(list)
        for process in processes.values():
            children[process.parent].append(process.pid)
        table._children = dict(children)
        return table

    def tree(self, root: int | None) -> set[int]:
        """``root`` and every process below it that is alive; empty if ``root`` is not."""
        if root is None or root not in self.processes:
            return set()
        found, stack = set(), [root]
        while stack:
            pid = stack.pop()
            found.add(pid)
            stack.extend(self._children.get(pid, []))
        return found

    def children(self, pid: int | None) -> list[int]:
        return sorted(self._children.get(pid, [])) if pid is not None else []

    def rss(self, pids: set[int]) -> int:
        return sum(self.processes[pid].rss for pid in pids if pid in self.processes)


def command_of(pid: int) -> str:
    """The command line (Ray's workers rewrite theirs to ``ray::<actor class>``); "" once gone."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def memory_status(pid: int) -> dict[str, int]:
    """VmHWM (the peak resident size since the process started), RssAnon and RssFile, in bytes;
    empty once the process is gone."""
    wanted = ("VmHWM", "RssAnon", "RssFile", "RssShmem")
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in wanted:
                found[key] = int(value.split()[0]) * 1024
    return found


def directory_bytes(folder: Path) -> int:
    """Bytes the files below ``folder`` take on disk (allocated blocks, as ``du`` counts them)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_blocks * 512
    return total
