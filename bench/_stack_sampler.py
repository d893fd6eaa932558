"""bench/footprint.py's stack part: which part of the stack each process of this host is, and its
resident memory and CPU, read from /proc every second."""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench._proc_table import ProcessTable, command_of, memory_status

__all__ = ["StackSampler", "java_heap", "ray_part"]

#: Ray's processes by a word of their command line, in the order they are tried.
RAY_DAEMONS = (
    ("gcs_server", "Ray GCS (gcs_server)"),
    ("raylet", "Ray raylet"),
    ("dashboard/agent.py", "Ray dashboard agent"),
    ("runtime_env/agent/main.py", "Ray runtime-env agent"),
    ("log_monitor.py", "Ray log monitor"),
    ("monitor.py", "Ray monitor"),
    ("dashboard/dashboard.py", "Ray dashboard"),
    ("ray.util.client.server", "Ray client server"),
)
#: Ray workers by the name they give themselves: one part per process for these.
RAY_INSTANCES = {"ray::ServeReplica": "API replica", "ray::ConsumerActor": "consumer actor"}
RAY_WORKERS = {
    "ray::ServeController": "Serve controller",
    "ray::ProxyActor": "Serve proxy",
    "ray::IDLE": "Ray idle workers",
    "ray::DashboardAgent": "Ray dashboard agent",
    "ray::RuntimeEnvAgent": "Ray runtime-env agent",
}
IDLE = RAY_WORKERS["ray::IDLE"]


def ray_part(command: str) -> str:
    """The part a process of a Ray node plays, by its command line."""
    words = command.split()
    if command.startswith("ray::"):
        # A worker's title is its actor class, then what it runs: ray::ServeController.run
        name = "ray::" + re.split(r"[:.\s]", command.removeprefix("ray::"))[0]
        return RAY_WORKERS.get(name, f"Ray worker {name}")
    for word, part in RAY_DAEMONS:
        if any(w.endswith(word) for w in words[:3]):
            return part
    if "start" in words[:3]:
        return "`ray start`"
    script = next((w for w in words if w.endswith(".py")), words[0] if words else "?")
    return f"Ray, other ({script.rpartition('/')[2]})"


class StackSampler:
    """Reads /proc every second on a thread and names each process's part of the stack: the
    processes below each of ``roots``, each child of the changes stage's supervisor, and each
    process of the Ray nodes (``ray_pids()``) by its command line."""

    def __init__(
        self, roots: dict[str, int | None], stage_pid: int | None, ray_pids: Callable[[], set[int]]
    ) -> None:
        self._roots = roots
        self._stage_pid = stage_pid
        self._ray_pids = ray_pids
        self._labels: dict[int, str] = {}
        self._instances: dict[str, int] = {}
        #: (time, {pid: (part, rss, cpu seconds)}) per sample.
        self.samples: list[tuple[float, dict[int, tuple[str, int, float]]]] = []
        self._stop = asyncio.Event()

    def _numbered(self, kind: str, pid: int) -> str:
        if not self._labels.get(pid, "").startswith(kind):
            self._instances[kind] = self._instances.get(kind, 0) + 1
            self._labels[pid] = f"{kind} {self._instances[kind]}"
        return self._labels[pid]

    def _ray_label(self, pid: int) -> str:
        command = command_of(pid)
        prefix = next((p for p in RAY_INSTANCES if command.startswith(p)), None)
        if prefix is not None:
            return self._numbered(RAY_INSTANCES[prefix], pid)
        return ray_part(command)

    def sample(self) -> None:
        table = ProcessTable.read()
        for worker in table.children(self._stage_pid):
            part = self._numbered("stage worker", worker)
            for member in table.tree(worker):
                self._labels[member] = part
        for part, root in self._roots.items():
            for member in table.tree(root):
                self._labels.setdefault(member, part)
        for pid in self._ray_pids() & table.processes.keys():
            # An idle worker may have become an actor since: named again until it is one.
            if self._labels.get(pid, IDLE) == IDLE:
                self._labels[pid] = self._ray_label(pid)
        self.samples.append(
            (
                table.at,
                {
                    pid: (part, table.processes[pid].rss, table.processes[pid].cpu_s)
                    for pid, part in self._labels.items()
                    if pid in table.processes
                },
            )
        )

    async def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()

    def summary(self, since: float, until: float) -> list[dict[str, Any]]:
        """Per part: median and peak RSS, mean CPU cores over [since, until], and the sums of its
        live processes' VmHWM, RssAnon and RssFile at the end."""
        window = [(at, procs) for at, procs in self.samples if since <= at <= until]
        if len(window) < 2:
            raise RuntimeError("fewer than two samples in the measured window")
        parts = sorted({part for _, procs in window for part, _, _ in procs.values()})
        rows = []
        for part in parts:
            rss = [sum(r for p, r, _ in procs.values() if p == part) for _, procs in window]
            cpu = 0.0
            for (_, before), (_, after) in itertools.pairwise(window):
                cpu += sum(
                    after[pid][2] - before[pid][2] for pid in after if after[pid][0] == part and pid in before
                )
            last = [pid for pid, (p, _, _) in window[-1][1].items() if p == part]
            status = [memory_status(pid) for pid in last]
            rows.append(
                {
                    "part": part,
                    "processes": len(last),
                    "steady_rss": statistics.median(rss),
                    "peak_rss": max(rss),
                    "hwm": sum(s.get("VmHWM", 0) for s in status),
                    "rss_anon": sum(s.get("RssAnon", 0) for s in status),
                    "rss_file": sum(s.get("RssFile", 0) for s in status),
                    "cpu_cores": cpu / (window[-1][0] - window[0][0]),
                }
            )
        return rows


def java_heap(pid: int) -> dict[str, int]:
    """The committed and used heap of a JVM (``jcmd GC.heap_info``); empty where jcmd cannot tell."""
    try:
        done = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = re.search(r"total (\d+)K, used (\d+)K", done.stdout)
    return {"committed": int(found[1]) * 1024, "used": int(found[2]) * 1024} if found else {}
