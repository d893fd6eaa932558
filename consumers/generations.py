"""One consumer group per index generation, as the control topic says (``ragstream consume``).

The supervisor follows the control topic (``streams.control``) and keeps, for every generation
that exists, a ``ConsumerGroup`` with its ``ScalingController``, on the generation's settings
(its shape, collection, chunk log and consumer group):

- the active and the kept generation run at full priority; a generation being built runs at
  ``reindex_niceness``, from the beginning of the input topic (its group is new), then live;
- when a building generation becomes the active one, its members are replaced by full-priority
  ones in the same consumer group (a process cannot raise its own priority back);
- when a generation's record is tombstoned (an aborted reindex, or the kept generation dropped),
  its group is stopped cleanly and what it made is dropped (``consumers.generation_resources``);
- once the kept generation's ``switched_at + reindex_keep_s`` has passed, the supervisor
  tombstones its record itself, and drops it as any other.

With no control records, generation 0 is the active one and its settings are the configured
ones: one group, as ``ragstream consume`` ran before generations existed.

Blocking Ray calls (starting a group, waiting for its models, stopping it) run in threads; the
event loop keeps following the control topic and running the other generations' controllers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from aiokafka.errors import KafkaError

from consumers.actors import ConsumerGroup, init_ray
from consumers.controller import ScalingController
from consumers.errors import IndexingError
from consumers.generation_resources import drop_generation
from schemas import Settings
from schemas.generations import ControlState, Generation, GenerationRole, generation_key
from streams.control import ControlFollower, publish_control
from streams.topics import ensure_topics

__all__ = ["GenerationSupervisor"]

log = logging.getLogger(__name__)

#: How long a generation's consumers may take to be placed and load their model, and how long
#: until a generation whose consumers did not is tried again.
START_TIMEOUT_S = 300.0
#: The most generations that have consumers at once: the active, the kept and the one being built.
GENERATIONS_AT_ONCE = 3
START_RETRY_S = 60.0


@dataclass
class _RunningGeneration:
    """A generation's consumer group and the controller that scales it."""

    generation: Generation
    settings: Settings
    group: ConsumerGroup
    controller_options: dict[str, Any]
    _stop: threading.Event = field(default_factory=threading.Event)
    _controller: asyncio.Task[None] | None = None

    def start_controller(self) -> None:
        self._stop = threading.Event()
        controller = ScalingController(self.settings, self.group, **self.controller_options)
        self._controller = asyncio.create_task(
            controller.run(self._stop), name=f"controller-g{self.generation.number}"
        )

    async def stop_controller(self) -> None:
        """Stop scaling (the group keeps its members); a controller that failed raises here."""
        controller, self._controller = self._controller, None
        if controller is not None:
            self._stop.set()
            await controller

    def controller_failed(self) -> BaseException | None:
        controller = self._controller
        if controller is None or not controller.done() or controller.cancelled():
            return None
        return controller.exception()

    async def stop(self) -> None:
        """Stop the controller, then the members: each finishes and commits its batch in flight."""
        try:
            await self.stop_controller()
        finally:
            await asyncio.to_thread(self.group.stop, 120)

    def describe(self, role: GenerationRole) -> str:
        count = len(self.group.actors)
        priority = f" at nice {self.group.niceness}" if self.group.niceness else ""
        return (
            f"generation {self.generation.number} ({self.generation.shape.describe()}): {role}, "
            f"{count} consumer{'s' if count != 1 else ''}{priority}, "
            f"{self.settings.input_topic} into {self.settings.collection}"
        )


def _same_generation(running: Generation, record: Generation) -> bool:
    """Whether ``record`` is the generation ``running`` runs: the same record, or the one that
    ``ragstream reindex`` writes for generation 0 (which ran on the settings until then)."""
    if running.created_at == 0.0 and running.number == record.number == 0:
        if running.shape != record.shape:
            log.warning(
                "generation 0's record says %s, but its consumers run with %s, as configured",
                record.shape.describe(),
                running.shape.describe(),
            )
        return True
    return running == record


class GenerationSupervisor:
    """Runs the consumer groups of every index generation until ``run``'s stop event is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        controller_options: dict[str, Any] | None = None,
    ) -> None:
        self._base = settings
        self._poll_s = poll_s
        #: Wall-clock time, as ``ActiveGeneration.switched_at`` is.
        self._clock = clock
        self._controller_options = controller_options or {}
        self._running: dict[int, _RunningGeneration] = {}
        #: Generations whose group stopped and whose resources are still to be dropped (a drop
        #: that failed is tried again on the next round).
        self._to_drop: dict[int, Settings] = {}
        self._tombstoned: set[int] = set()
        #: Generations whose consumers could not start, and when to try again.
        self._start_again_at: dict[int, float] = {}

    @property
    def groups(self) -> dict[int, ConsumerGroup]:
        """The consumer group of each generation running now, by number."""
        return {number: running.group for number, running in self._running.items()}

    async def run(self, stop: threading.Event) -> None:
        """Follow the control topic and keep the groups as it says until ``stop`` is set (a signal
        handler may set it); then stop every group, each member finishing its batch in flight."""
        await ensure_topics(self._base)
        # A Ray of this process's own (no RAY_ADDRESS) gets room for every group at its largest:
        # the active, the kept and the one being built, which reserves no CPU (ConsumerGroup).
        await asyncio.to_thread(init_ray, self._base.consumers_max * GENERATIONS_AT_ONCE)
        async with ControlFollower(self._base) as follower:
            try:
                while not stop.is_set():
                    self._raise_if_a_controller_failed()
                    await self._reconcile(follower.state)
                    await follower.wait_changed(timeout=self._poll_s)
            finally:
                log.info("stopping: finishing the batches in flight")
                running, self._running = list(self._running.values()), {}
                results = await asyncio.gather(*(r.stop() for r in running), return_exceptions=True)
                for error in results:
                    if isinstance(error, BaseException):
                        log.error("a consumer group did not stop cleanly: %r", error)

    def _raise_if_a_controller_failed(self) -> None:
        """A consumer that stopped on its own (an error no restart fixes) ends the command, as
        it did with one group: every generation stops, and the error says what to fix."""
        for running in self._running.values():
            error = running.controller_failed()
            if error is not None:
                raise error

    async def _reconcile(self, state: ControlState) -> None:
        """One round: retire what is gone, start what is new, switch priorities, drop the kept
        generation once its time is up. ``state`` changes under the follower between awaits, so
        what it says is read once, here."""
        roles = state.roles()
        wanted = {n: found for n in roles if (found := state.generation(n, self._base)) is not None}
        active = wanted.get(state.active.generation)
        previous, switched_at = state.active.previous, state.active.switched_at
        if active is None:
            log.warning("the active generation %d has no record: waiting for it", state.active.generation)
            return
        for number, running in list(self._running.items()):
            record = wanted.get(number)
            if record is not None and _same_generation(running.generation, record):
                running.generation = record
            else:  # gone, or a new generation under a number dropped meanwhile
                await self._retire(number, running)
        await self._drop_pending(active.settings(self._base))
        now = self._clock()
        new = [
            g
            for n, g in wanted.items()
            if n not in self._running and n not in self._to_drop and self._start_again_at.get(n, now) <= now
        ]
        await asyncio.gather(*(self._start(g, roles[g.number]) for g in new))
        for number, running in self._running.items():
            if running.group.niceness and roles[number] != "building":
                await self._to_full_priority(running, roles[number])
        if previous is not None and roles.get(previous) == "kept":
            await self._expire_kept(previous, switched_at)

    async def _start(self, generation: Generation, role: GenerationRole) -> None:
        settings = generation.settings(self._base)
        await ensure_topics(settings)  # the generation's chunk-log topic
        niceness = self._base.reindex_niceness if role == "building" else 0
        group = ConsumerGroup(
            settings, settings.consumers_min, most=settings.consumers_max, niceness=niceness
        )
        try:
            await asyncio.to_thread(group.start)
            await asyncio.to_thread(group.wait_ready, START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            # Not fatal: the other generations keep indexing, and this one is tried again.
            await asyncio.to_thread(group.stop)
            self._start_again_at[generation.number] = self._clock() + START_RETRY_S
            log.error(  # noqa: TRY400 - a timeout's traceback says nothing more
                "generation %d's consumers were not ready within %.0f s: the cluster has no room for "
                "them (see `ray status`: each needs %.1f GB of memory) or the model loads too slowly; "
                "trying again in %.0f s (`ragstream reindex --abort` gives up a generation being built)",
                generation.number,
                START_TIMEOUT_S,
                settings.consumer_memory_bytes / 1e9,
                START_RETRY_S,
            )
            return
        except BaseException:
            await asyncio.to_thread(group.stop)
            raise
        self._start_again_at.pop(generation.number, None)
        running = _RunningGeneration(generation, settings, group, self._controller_options)
        running.start_controller()
        self._running[generation.number] = running
        log.info(running.describe(role))

    async def _to_full_priority(self, running: _RunningGeneration, role: GenerationRole) -> None:
        number = running.generation.number
        log.info(
            "generation %d is %s: replacing its consumers at nice %d", number, role, running.group.niceness
        )
        # The controller would add or retire members while they are being replaced.
        await running.stop_controller()
        await asyncio.to_thread(running.group.renice, 0)
        running.start_controller()
        log.info(running.describe(role))

    async def _retire(self, number: int, running: _RunningGeneration) -> None:
        log.info("generation %d's record is gone: stopping its consumers", number)
        del self._running[number]
        try:
            await running.stop()
        except Exception:
            # Its members are ended either way (ConsumerGroup.stop), and what went wrong is logged.
            log.exception("generation %d's consumers did not stop cleanly", number)
        self._to_drop[number] = running.settings

    async def _drop_pending(self, active: Settings) -> None:
        for number, settings in list(self._to_drop.items()):
            try:
                await drop_generation(settings, active=active)
            except IndexingError as exc:
                log.warning("generation %d not dropped yet, trying again: %r", number, exc)
                continue
            except ValueError:
                # Its resources are the active generation's: never dropped, never tried again.
                log.exception("generation %d not dropped", number)
                del self._to_drop[number]
                continue
            del self._to_drop[number]
            log.info("generation %d dropped", number)

    async def _expire_kept(self, number: int, switched_at: float) -> None:
        keep_until = switched_at + self._base.reindex_keep_s
        if number in self._tombstoned or self._clock() < keep_until:
            return
        log.info(
            "generation %d was kept %.0f s after the switch (RAGSTREAM_REINDEX_KEEP_S): dropping it",
            number,
            self._base.reindex_keep_s,
        )
        try:
            await publish_control(self._base, [(generation_key(number), None)])
        except KafkaError as exc:
            log.warning("generation %d's tombstone not published, trying again: %r", number, exc)
            return
        # It comes back through the follower, and the next round retires and drops the generation.
        self._tombstoned.add(number)
