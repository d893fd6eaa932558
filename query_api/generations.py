"""The index generations an API replica serves, follows and holds ready for a switch.

A generation (``schemas.generations``) has a collection, a chunk log and a query model of its
own. A replica opens, for each generation that exists (the active one, one being built, the one
kept for a rollback), a ``ServingGeneration``: that collection, views that replay that chunk log
from its start and then follow it, and the query model, all opened and closed as a unit.
``ReplicaGenerations`` follows the control topic: it opens a generation as soon as its record
appears, closes it once its record is gone, says in a heartbeat which ones are caught up, and
when ``active`` names another generation it holds caught up, switches to it by handing the app
that generation's ``Services`` in one assignment. A request keeps the ``Services`` it started
with, so each search is answered by one generation alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from engines.chroma import open_collection
from query_api.chunk_log_view import ChunkLogView, records_behind
from query_api.lexical import LexicalIndex
from query_api.nearest import NearestChunks
from query_api.prometheus_metrics import PipelineMetrics
from query_api.query_embedding import QueryBatcher, TextEncoder
from query_api.query_model import load_query_model
from query_api.rerank import Reranker
from query_api.services import Services
from query_api.stats import StatsTail
from query_api.vector_coverage import VectorCoverage
from query_api.vector_index import VectorIndex
from schemas.generations import ControlState, Generation, ReplicaReport, replica_key
from schemas.search_tuning import TunedFusion
from schemas.settings import Settings
from streams.control import ControlFollower
from streams.kafka_clients import client_options
from streams.lag import LagReader
from streams.publisher import EventPublisher

if TYPE_CHECKING:
    from chromadb.api import AsyncClientAPI

__all__ = ["QueryModels", "ReplicaGenerations", "ServingGeneration", "SharedServices", "default_replica_id"]

log = logging.getLogger(__name__)


def default_replica_id() -> str:
    """How a replica that was given no name calls itself in its heartbeat."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class SharedServices:
    """What every generation's ``Services`` share: nothing here depends on the index's shape."""

    chroma: AsyncClientAPI
    lag_reader: LagReader
    stats: StatsTail
    metrics: PipelineMetrics
    reranker: Reranker | None
    publisher: EventPublisher | None


class QueryModels:
    """The query models of the generations held, each loaded once: generations of one model share it.

    ``injected`` (a test's embedder) serves every generation of the settings' model.
    """

    def __init__(self, settings: Settings, injected: TextEncoder | None = None) -> None:
        self._injected = injected
        self._injected_model = settings.model
        self._loaded: dict[tuple[object, ...], TextEncoder] = {}
        self._users: dict[tuple[object, ...], int] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, settings: Settings) -> TextEncoder:
        if self._injected is not None and settings.model == self._injected_model:
            return self._injected
        key = _model_key(settings)
        async with self._lock:
            if key not in self._loaded:
                self._loaded[key] = await asyncio.to_thread(load_query_model, settings)
            self._users[key] = self._users.get(key, 0) + 1
            return self._loaded[key]

    def release(self, settings: Settings) -> None:
        """The generation of ``settings`` no longer uses its model; the last user unloads it."""
        if self._injected is not None and settings.model == self._injected_model:
            return
        key = _model_key(settings)
        self._users[key] -= 1
        if not self._users[key]:
            del self._users[key], self._loaded[key]


def _model_key(settings: Settings) -> tuple[object, ...]:
    # Everything load_query_model reads; the index precision only matters to torch.
    precision = settings.precision if settings.query_runtime == "torch" else None
    return (
        settings.model,
        settings.query_runtime,
        settings.query_precision,
        settings.query_threads,
        precision,
    )


@dataclass
class ServingGeneration:
    """One generation's collection, chunk-log views and query model, opened and closed as a unit;
    ``services`` is what the routes get while it serves, with what all generations share."""

    generation: Generation
    settings: Settings
    services: Services
    _stack: AsyncExitStack = field(repr=False)

    @property
    def number(self) -> int:
        return self.generation.number

    @property
    def caught_up(self) -> bool:
        return self.services.chunk_log_view.caught_up

    @classmethod
    async def open(
        cls, generation: Generation, base: Settings, shared: SharedServices, models: QueryModels
    ) -> ServingGeneration:
        """Open it: its views start replaying its chunk log (``caught_up`` says when they have)."""
        settings = generation.settings(base)
        async with AsyncExitStack() as stack:
            # Started first, so that replaying the chunk log overlaps loading the model.
            lexical_index = LexicalIndex(settings.lexical_index_dir)
            stack.callback(lexical_index.close)
            view = await stack.enter_async_context(
                ChunkLogView(
                    lexical_index,
                    settings.kafka,
                    settings.chunks_topic,
                    vectors=VectorIndex() if settings.local_vectors else None,
                    max_record_bytes=settings.max_record_bytes,
                    snapshot_dir=settings.snapshot_dir,
                    snapshot_interval_s=settings.snapshot_interval_s,
                    snapshot_keep=settings.snapshot_keep,
                )
            )
            collection = await open_collection(shared.chroma, settings.collection)
            nearest = await stack.enter_async_context(
                NearestChunks(
                    settings.chroma_host,
                    settings.chroma_port,
                    str(collection.id),
                    max_batch=settings.query_batch_max,
                    token=settings.chroma_token.get_secret_value() if settings.chroma_token else None,
                )
            )
            coverage = await stack.enter_async_context(VectorCoverage(view, collection))
            model = await models.acquire(settings)
            stack.callback(models.release, settings)
            batcher = QueryBatcher(model, settings.query_batch_max, view.vectors)
            stack.push_async_callback(batcher.close)
            services = Services(
                settings=settings,
                chroma=shared.chroma,
                collection=collection,
                embedder=model,
                query_batcher=batcher,
                nearest=nearest,
                lag_reader=shared.lag_reader,
                stats=shared.stats,
                metrics=shared.metrics,
                chunk_log_view=view,
                vector_coverage=coverage,
                reranker=shared.reranker,
                publisher=shared.publisher,
                generation=generation.number,
            )
            # Opened whole: from here the exit stack is this object's to close.
            return cls(generation, settings, services, stack.pop_all())

    async def close(self) -> None:
        await self._stack.aclose()


class ReplicaGenerations:
    """Follows the control topic and keeps this replica's generations as it says.

    ``start()`` reads the control topic and opens the active generation (with no control records:
    generation 0, as the settings name it); ``serve()`` gives the app its ``Services`` and starts
    following: opening the generations whose records appear, closing those whose records go,
    switching when ``active`` changes, and publishing a heartbeat every ``heartbeat_s``.
    ``stop()`` stops all of that, tombstones the heartbeat and closes every generation.
    """

    def __init__(
        self,
        settings: Settings,
        replica: str,
        models: QueryModels,
        *,
        heartbeat_s: float = 2.0,
        poll_s: float = 0.5,
        drain_s: float = 5.0,
        control_timeout_s: float = 10.0,
    ) -> None:
        self._settings = settings
        self.replica = replica
        self._models = models
        self._heartbeat_s = heartbeat_s
        self._poll_s = poll_s
        self._drain_s = drain_s
        self._follower = ControlFollower(settings, start_timeout_s=control_timeout_s)
        self._shared: SharedServices | None = None
        self._switch: Callable[[Services], None] | None = None
        self._held: dict[int, ServingGeneration] = {}
        #: When each generation stopped serving: its bundle outlives the searches it began by ``drain_s``.
        self._served_until: dict[int, float] = {}
        #: Generations whose record is gone, waiting for those searches before they close.
        self._leaving: set[int] = set()
        self._retry_at: dict[int, float] = {}
        self._serving: int | None = None
        self._pending: ServingGeneration | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._producer: AIOKafkaProducer | None = None
        self._control_exists = False
        #: The generations the last heartbeat reported caught up.
        self.ready: tuple[int, ...] = ()

    @property
    def serving(self) -> ServingGeneration:
        """The generation whose ``Services`` the app hands out."""
        if self._serving is None:
            if self._pending is None:
                raise RuntimeError("no generation is open: call start() first")
            return self._pending
        return self._held[self._serving]

    def tuned_for(self, tenant: str | None) -> TunedFusion | None:
        """The fusion parameters ``ragstream tune`` set for ``tenant``'s searches, as the control
        topic says now (``ControlState.tuned_for``)."""
        return self._follower.state.tuned_for(tenant)

    @property
    def held(self) -> tuple[int, ...]:
        return tuple(sorted(self._held))

    async def start(self, shared: SharedServices) -> None:
        """Read the control topic and open the generation it says is active (its views start
        replaying; ``serving.caught_up`` says when they have)."""
        self._shared = shared
        await self._follower.start()
        state = self._follower.state
        try:
            generation = state.active_generation(self._settings)
        except LookupError as exc:
            log.warning("%s; serving generation 0 as the settings name it until it has one", exc)
            generation = Generation.base(self._settings)
        self._pending = await ServingGeneration.open(generation, self._settings, shared, self._models)
        log.info("serving index generation %d (%s)", generation.number, generation.shape.describe())

    def serve(self, reranker: Reranker | None, switch: Callable[[Services], None]) -> Services:
        """The active generation's ``Services``, with ``reranker`` (loaded while its views
        replayed); from now on ``switch`` is called with another's when ``active`` changes."""
        first, shared = self._pending, self._shared
        if first is None or shared is None:
            raise RuntimeError("no generation is open: call start() first")
        self._shared, self._switch = replace(shared, reranker=reranker), switch
        first.services = replace(first.services, reranker=reranker)
        self._held[first.number], self._serving, self._pending = first, first.number, None
        self._tasks = [
            asyncio.create_task(self._follow(), name="generations-follow"),
            asyncio.create_task(self._beat(), name="generations-heartbeat"),
        ]
        return first.services

    async def stop(self) -> None:
        """Stop following, tombstone this replica's heartbeat, close every generation. Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._say_goodbye()
        await self._follower.stop()
        pending, self._pending = self._pending, None
        held, self._held = self._held, {}
        serving = held.pop(self._serving, None) if self._serving is not None else None
        # The one serving last: searches still running hold its Services.
        for bundle in [*held.values(), serving, pending]:
            if bundle is not None:
                await bundle.close()

    # --- following the control topic -------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                await self._reconcile(self._follower.state)
            except Exception:
                # A replica that stopped following would miss a switch: say why and keep going.
                log.exception("following the index generations failed; trying again")
            await self._follower.wait_changed(self._poll_s)

    async def _reconcile(self, state: ControlState) -> None:
        now = time.monotonic()
        self._leaving = {
            number
            for number, held in self._held.items()
            if number != self._serving
            and (
                (record := state.generation(number, self._settings)) is None
                or _replaced(held.generation, record)
            )
        }
        for number in sorted(self._leaving):
            await self._retire(number, now)
        for number in state.roles():
            if number not in self._held and now >= self._retry_at.get(number, 0.0):
                record = state.generation(number, self._settings)
                if record is not None:
                    await self._open(record)
        active = state.active.generation
        target = self._held.get(active)
        if (
            active != self._serving
            and target is not None
            and target.caught_up
            and active not in self._leaving
        ):
            self._switch_to(target)

    async def _open(self, generation: Generation) -> None:
        assert self._shared is not None
        try:
            opened = await ServingGeneration.open(generation, self._settings, self._shared, self._models)
        except Exception:
            # Chroma away, a model that does not load: try again in a while, keep serving meanwhile.
            log.exception("could not open index generation %d; trying again in 10 s", generation.number)
            self._retry_at[generation.number] = time.monotonic() + 10.0
            return
        self._held[generation.number] = opened
        log.info(
            "index generation %d opened beside the one serving (%s); its views replay %s",
            generation.number,
            generation.shape.describe(),
            opened.settings.chunks_topic,
        )

    async def _retire(self, number: int, now: float) -> None:
        """Close a generation whose record is gone, once the searches it began are answered."""
        if now - self._served_until.get(number, float("-inf")) < self._drain_s:
            return
        self._leaving.discard(number)
        self._served_until.pop(number, None)
        # Never report a generation this replica no longer holds, even until the next heartbeat.
        self.ready = tuple(n for n in self.ready if n != number)
        await self._held.pop(number).close()
        log.info("index generation %d closed: its record is gone", number)

    def _switch_to(self, target: ServingGeneration) -> None:
        assert self._switch is not None
        previous, self._serving = self._serving, target.number
        if previous is not None:
            self._served_until[previous] = time.monotonic()
        # One assignment: a request holds the Services it started with, whole.
        self._switch(target.services)
        log.info("switched from index generation %s to %d", previous, target.number)

    # --- the heartbeat -----------------------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            try:
                self.ready = await self._caught_up()
                await self._publish(self._report())
            except KafkaError as exc:
                log.warning("could not publish this replica's heartbeat: %s", exc)
                await self._drop_producer()
            except Exception:
                log.exception("could not publish this replica's heartbeat")
            await asyncio.sleep(self._heartbeat_s)

    def _report(self) -> ReplicaReport:
        serving = self._serving if self._serving is not None else 0
        return ReplicaReport(self.replica, serving, self.ready, time.time())

    async def _caught_up(self) -> tuple[int, ...]:
        """The generations whose views have replayed their chunk log and are at most
        ``api_max_view_lag`` records behind it now: as current as the bound this replica serves by."""
        assert self._shared is not None
        reader = self._shared.lag_reader
        await reader.start()
        ready = []
        for number, held in sorted(self._held.items()):
            if number in self._leaving or not held.caught_up:
                continue
            view = held.services.chunk_log_view
            behind = records_behind(view.applied_offsets(), await reader.end_offsets(view.topic))
            if behind <= held.settings.api_max_view_lag:
                ready.append(number)
        # A generation may have started leaving while the offsets were read.
        return tuple(n for n in ready if n in self._held and n not in self._leaving)

    async def _publish(self, report: ReplicaReport | None) -> None:
        """Send the heartbeat (None: its tombstone), once the control topic exists: sending to a
        missing topic would wait for it, or have a broker that creates topics make it uncompacted."""
        assert self._shared is not None
        if not self._control_exists:
            await self._shared.lag_reader.start()
            self._control_exists = bool(
                await self._shared.lag_reader.end_offsets(self._settings.control_topic)
            )
            if not self._control_exists:
                return
        if self._producer is None:
            producer = AIOKafkaProducer(**client_options(self._settings.kafka), acks="all")
            await producer.start()
            self._producer = producer
        value = report.to_json() if report is not None else None
        await self._producer.send_and_wait(
            self._settings.control_topic, value, key=replica_key(self.replica), partition=0
        )

    async def _say_goodbye(self) -> None:
        if self._shared is None or not self._control_exists:
            return
        try:
            async with asyncio.timeout(5.0):
                await self._publish(None)
        except (KafkaError, TimeoutError) as exc:
            # Its heartbeat then ages out: after 15 s a switch no longer waits for this replica.
            log.warning("could not remove this replica's heartbeat: %s", exc)
        await self._drop_producer()

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()


def _replaced(held: Generation, record: Generation) -> bool:
    """The record names another generation of the same number (dropped, then made again)."""
    # Generation 0's record, once a reindex writes it, carries the shape the settings gave it.
    return held.shape != record.shape or (held.number != 0 and held.created_at != record.created_at)
