"""Ray actors that run the indexing consumers, and the group that starts, watches and stops them."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import ray

from consumers.consumer import IndexingConsumer
from consumers.priority import SearchYieldingEncoder
from consumers.search_activity import SearchActivity
from engines.embedder import EMBEDDING_MEMORY_ENV, Embedder
from engines.local_ray import join_or_start_ray
from schemas import Settings
from schemas.fault_injection import fault_injection_env
from schemas.logs import configure_logging

log = logging.getLogger(__name__)

RAY_NAMESPACE = "ragstream"


@ray.remote
class ConsumerActor:
    """One group member in its own process; Ray restarts it (and its ``run``) if it dies."""

    def __init__(self, settings: Settings, torch_threads: int, niceness: int = 0) -> None:
        configure_logging("consumer", settings.log_format)
        if niceness:
            # Before the model loads: its threads, and every thread started after, inherit it.
            lower_this_process(niceness)
        # One line per Chroma request would drown what matters.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._embedder = Embedder(
            settings.model, settings.precision, settings.embed_batch_size, torch_threads
        )
        self._fixed_threads = settings.torch_threads
        self._encoder = _yielding_to_searches(self._embedder, settings)
        # The consumer asks only for what Embedder and the wrapper share (consumers.indexer.Encoder).
        self._consumer = IndexingConsumer(settings, cast(Embedder, self._encoder))
        self._stopping = asyncio.Event()

    async def run(self) -> dict[str, Any]:
        """Consume until ``stop``; returns the final counters."""
        if self._stopping.is_set():
            return asdict(self._consumer.stats)
        await self._consumer.start()
        try:
            await self._consumer.run()
        finally:
            await self._consumer.stop()
            if isinstance(self._encoder, SearchYieldingEncoder):
                self._encoder.close()
        return dict(asdict(self._consumer.stats))

    async def stop(self) -> None:
        self._stopping.set()
        self._consumer.request_stop()

    async def stats(self) -> dict[str, Any]:
        return dict(asdict(self._consumer.stats))

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this member runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def share_cores(self, members_on_node: int) -> int:
        """Embed with this node's cores divided among the group's members on it (unless
        ``torch_threads`` fixes the count); returns the threads the next batch uses."""
        if not self._fixed_threads:
            self._embedder.threads = max(1, (os.cpu_count() or 1) // max(1, members_on_node))
        return self._embedder.threads

    def threads(self) -> int:
        """The torch threads this member's next batch embeds with."""
        return self._embedder.threads


def lower_this_process(niceness: int) -> None:
    """Run every thread of this process at ``niceness`` at least (irreversible without privileges).

    ``os.nice`` changes only the calling thread on Linux, and an actor's methods run on threads Ray
    started before this: each thread is lowered, and the threads they start later inherit it.
    """
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():  # not Linux: there the nice value is the process's
        os.nice(max(0, niceness - os.nice(0)))
        return
    for task in tasks.iterdir():
        thread = int(task.name)
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except ProcessLookupError:
            continue  # the thread ended meanwhile


def _yielding_to_searches(embedder: Embedder, settings: Settings) -> Embedder | SearchYieldingEncoder:
    """The embedder, at ``consumer_niceness`` while searches run on this host (see consumers.priority)."""
    if settings.consumer_niceness == 0:
        return embedder
    activity = SearchActivity(settings.search_activity_path, settings.search_activity_window_s)
    return SearchYieldingEncoder(embedder, activity, settings.consumer_niceness)


def init_ray(consumers: int) -> None:
    """Join the cluster named by ``RAY_ADDRESS``, or start a local one with a CPU per consumer at least."""
    join_or_start_ray(RAY_NAMESPACE, num_cpus=max(os.cpu_count() or 1, consumers))


class ConsumerGroup:
    """Consumer actors in one Kafka consumer group (at most one per partition does work).

    ``count`` members start; ``most`` (default ``count``) is the largest the group may grow to by
    ``add()``: each member's torch threads share the machine's cores among that many. Members run
    at ``niceness`` (a generation being built yields the CPU to the one that serves).
    """

    def __init__(self, settings: Settings, count: int, *, most: int | None = None, niceness: int = 0) -> None:
        self._settings = settings
        self._count = count
        self._most = max(most or count, count)
        self.niceness = niceness
        self.actors: list[Any] = []
        self._runs: list[Any] = []

    def start(self) -> None:
        init_ray(self._most)
        for _ in range(self._count):
            self.add()
        log.info("started %d consumer actors", self._count)

    def add(self) -> Any:
        """One more member: the group rebalances to share the partitions with it."""
        threads = self._settings.torch_threads or max(1, (os.cpu_count() or 1) // self._most)
        actor = ConsumerActor.options(  # type: ignore[attr-defined]
            num_cpus=self._cpus,
            # Each actor holds a model: Ray places one only where this much memory is free, so a
            # node is never packed into an OOM, and the controller's budget counts in these units.
            memory=self._settings.consumer_memory_bytes,
            # Over the nodes of a multi-node cluster, so losing one node loses only its share.
            scheduling_strategy="SPREAD",
            max_restarts=-1,
            max_task_retries=-1,
            # Ray sets OMP_NUM_THREADS=num_cpus in workers, which slows torch's CPU kernels
            # even after torch.set_num_threads(); give OpenMP the threads torch is given.
            # The kernel caches are capped (see EMBEDDING_MEMORY_ENV: they, not the backlog, made
            # RSS creep up batch after batch); two malloc arenas also keep fragmentation down.
            runtime_env={
                "env_vars": {
                    "OMP_NUM_THREADS": str(threads),
                    **EMBEDDING_MEMORY_ENV,
                    "MALLOC_ARENA_MAX": "2",
                    **fault_injection_env(),
                }
            },
        ).remote(self._settings, threads, self.niceness)
        self.actors.append(actor)
        self._runs.append(actor.run.remote())
        return actor

    def remove(self, actor: Any = None, timeout: float = 300) -> None:
        """Retire ``actor`` (default: the newest member) cleanly: it finishes and commits its batch
        in flight and leaves the group, which rebalances its partitions to the others."""
        index = len(self.actors) - 1 if actor is None else self.actors.index(actor)
        actor, run = self.actors.pop(index), self._runs.pop(index)
        try:
            ray.get(actor.stop.remote(), timeout=timeout)
            ray.get(run, timeout=timeout)
        finally:
            ray.kill(actor, no_restart=True)

    def renice(self, niceness: int, timeout: float = 300) -> None:
        """Replace every member by one at ``niceness`` (a process cannot raise its own priority
        back), one at a time, in the same consumer group: each replacement continues from the
        committed offsets. Where the cluster has room for one more member, the new one joins with
        its model loaded before the old one finishes its batch and leaves, so its partitions wait
        for no model; otherwise the old one leaves first."""
        self.niceness = niceness
        for old in list(self.actors):
            if self._room_for_one_more():
                new = self.add()
                ray.get(new.pid.remote(), timeout=timeout)
                self.remove(old, timeout)
                continue
            self.remove(old, timeout)
            new = self.add()
            try:
                ray.get(new.pid.remote(), timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                # It stays a member: Ray places it once another group shrinks or a node joins.
                log.warning(
                    "a consumer at nice %d was not placed within %.0f s: the cluster has no room "
                    "for it yet (see `ray status`); it joins its group once placed",
                    niceness,
                    timeout,
                )

    @property
    def _cpus(self) -> float:
        """Ray CPUs a member reserves: none for a member at a lowered priority, which takes only
        the CPU that the others leave (a generation being rebuilt beside the active one)."""
        return 0.0 if self.niceness else self._settings.consumer_num_cpus

    def _room_for_one_more(self) -> bool:
        free = ray.available_resources()
        return (
            free.get("CPU", 0.0) >= self._cpus
            and free.get("memory", 0.0) >= self._settings.consumer_memory_bytes
        )

    def discard(self, actor: Any) -> None:
        """End a member that does not answer (dead, or waiting to be placed) without waiting for it:
        it has no batch it could still commit, and what it had not committed is replayed."""
        index = self.actors.index(actor)
        del self.actors[index], self._runs[index]
        ray.kill(actor, no_restart=True)

    def wait_ready(self, timeout: float = 300) -> None:
        """Block until every actor has loaded its model and answers."""
        ray.get([actor.pid.remote() for actor in self.actors], timeout=timeout)
        self.check()

    def check(self) -> None:
        """Raise the error of any consumer that stopped on its own (a crash is restarted by Ray;
        this is an error that a restart cannot fix, such as a wrong setting)."""
        finished, _ = ray.wait(self._runs, num_returns=len(self._runs), timeout=0)
        for run in finished:
            ray.get(run)  # raises the consumer's error
        if finished:
            raise RuntimeError("a consumer stopped without being asked to")

    def pids(self) -> list[int]:
        """The process id of each member (each runs in a process of its own)."""
        return list(ray.get([actor.pid.remote() for actor in self.actors]))

    def stats(self) -> list[dict[str, Any]]:
        return list(ray.get([actor.stats.remote() for actor in self.actors]))

    def stop(self, timeout: float = 60) -> None:
        """Let each actor finish and commit its batch in flight, then end them."""
        if not self.actors:
            return
        ray.get([actor.stop.remote() for actor in self.actors], timeout=timeout)
        try:
            ray.get(self._runs, timeout=timeout)
        finally:
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            self.actors, self._runs = [], []
