"""bench/reindex.py's ``--shares``: who had the cores during each pass, read from /proc every
second, and where each consumer's batches spent their time, read from its log."""

from __future__ import annotations

import itertools
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._proc_table import ProcessTable, command_of
from bench._stack_sampler import ray_part
from consumers.batch_timings import BatchTimings

__all__ = ["CoreShares", "batch_parts"]

#: Processes that belong to none of the stack's parts: other work on the machine.
OUTSIDE = "outside the stack"


@dataclass
class CoreShares:
    """Samples each process's CPU seconds every second and names its part: the broker, Chroma,
    the changes stage, the API, this bench (publisher and probes), the consumers' process and
    its Ray, each consumer actor apart (numbered in the order they appear: generation 0's
    first), and everything else on the machine."""

    roots: dict[str, int | None]
    consumers_pid: int | None
    samples: list[tuple[float, dict[int, tuple[str, float]]]] = field(default_factory=list)
    _labels: dict[int, str] = field(default_factory=dict)
    _actors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _label(self, table: ProcessTable, pid: int, consumers: set[int]) -> str:
        label = self._labels.get(pid)
        if label is not None:
            return label
        if pid not in consumers:
            label = next((part for part, root in self.roots.items() if pid in table.tree(root)), OUTSIDE)
        elif pid == self.consumers_pid:
            label = "consumers' process (ragstream consume)"
        elif command_of(pid).startswith("ray::ConsumerActor"):
            self._actors += 1
            label = f"consumer actor {self._actors}"
        else:
            # A Ray worker may become an actor later (idle, then set up): named again each time.
            return ray_part(command_of(pid))
        self._labels[pid] = label
        return label

    def sample(self) -> None:
        table = ProcessTable.read()
        consumers = table.tree(self.consumers_pid)
        self.samples.append(
            (
                table.at,
                {
                    pid: (self._label(table, pid, consumers), process.cpu_s)
                    for pid, process in table.processes.items()
                },
            )
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="core-shares", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def cores(self, since: float, until: float) -> dict[str, float]:
        """Mean cores each part used over [since, until] (``time.monotonic()``), largest first."""
        window = [(at, procs) for at, procs in self.samples if since <= at <= until]
        if len(window) < 2:
            return {}
        used: dict[str, float] = defaultdict(float)
        for (_, before), (_, after) in itertools.pairwise(window):
            for pid, (part, cpu_s) in after.items():
                if pid in before:
                    used[part] += cpu_s - before[pid][1]
        seconds = window[-1][0] - window[0][0]
        return dict(sorted(((part, cpu / seconds) for part, cpu in used.items()), key=lambda kv: -kv[1]))


_BATCH = re.compile(r"batch of (\d+) events: (\d+) chunks embedded.*?critical path [\d.]+s; (.*)$")
_PART = re.compile(r"(\w+) ([\d.]+)s")
_PID = re.compile(r"pid=(\d+)")
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?)")


def batch_parts(log: Path, since: float, until: float) -> dict[int, dict[str, Any]]:
    """Per consumer actor (by pid), its batches logged in [since, until] (wall-clock seconds):
    how many, their events and chunks embedded, and the seconds of each part (BatchTimings)."""
    found: dict[int, dict[str, Any]] = {}
    for line in log.read_text(errors="replace").splitlines():
        batch, pid, stamp = _BATCH.search(line), _PID.search(line), _STAMP.search(line)
        if batch is None or pid is None or stamp is None:
            continue
        at = datetime.fromisoformat(stamp[1].replace("Z", "+00:00")).timestamp()
        if not since <= at <= until:
            continue
        actor = found.setdefault(
            int(pid[1]), {"batches": 0, "events": 0, "chunks": 0, "parts": BatchTimings()}
        )
        actor["batches"] += 1
        actor["events"] += int(batch[1])
        actor["chunks"] += int(batch[2])
        for part, seconds in _PART.findall(batch[3]):
            if hasattr(actor["parts"], part):
                actor["parts"].add(part, float(seconds))
    return {pid: {**actor, "parts": actor["parts"].as_dict()} for pid, actor in found.items()}
