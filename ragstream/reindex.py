"""Building a new index generation beside the active one, switching to it, and back.

These steps only check, write the control topic, and wait: the consumers' process and the API
replicas follow the control topic (schemas.generations) and do the work. So every function here
reads what Kafka and Chroma say and returns it as data; ``ragstream.reindex_cli`` shows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

import orjson
from chromadb.api import AsyncClientAPI

from engines.chroma_client import open_chroma
from engines.chunking import Chunker
from ragstream.reindex_progress import BuildProgress, Coverage, check_coverage, count_chunks, read_progress
from schemas import Settings
from schemas.generations import (
    ACTIVE_KEY,
    ActiveGeneration,
    ControlState,
    Generation,
    IndexShape,
    ReplicaReport,
    generation_key,
)
from streams.control import ControlFollower, publish_control, read_control_state
from streams.lag import LagReader
from streams.topic_records import read_topic_records
from streams.topics import ensure_topics

__all__ = [
    "REPLICA_LIVE_S",
    "AbortResult",
    "NothingToRollBack",
    "Refused",
    "ReindexError",
    "SwitchBlocked",
    "SwitchCheck",
    "abort",
    "check_request",
    "consumers_running",
    "follow_build",
    "load_model",
    "requested_shape",
    "rollback",
    "start_generation",
    "switch",
    "wait_serving",
    "when",
]

#: A replica whose last heartbeat is older than this is gone: a switch no longer waits for it.
REPLICA_LIVE_S = 15.0
#: Live writes move both collections while the coverage check pages through them: a difference
#: seen this many times in a row is real.
POLL_S = 1.0
#: A consumer group whose scaling controller has not reported for this long is not running
#: (it reports every 2 s).
CONSUMERS_SILENT_S = 15.0

Precision = Literal["auto", "bf16", "fp32"]


class ReindexError(Exception):
    """A reindex step that cannot go on; the message says why and what to do next.

    ``Refused``: the request does not fit what the control topic says; nothing was written.
    ``NothingToRollBack``: a ``Refused`` rollback. ``SwitchBlocked``: a switch's conditions did
    not all hold within its time; nothing was written.
    """

    exit_code = 1
    #: How the CLI introduces the message.
    label = "error"


class Refused(ReindexError):
    exit_code = 2
    label = "refused"


class NothingToRollBack(Refused):
    label = "cannot roll back"


class SwitchBlocked(ReindexError):
    label = "waited too long"

    def __init__(self, check: SwitchCheck, within_s: float) -> None:
        self.check = check
        reasons = "; ".join(check.failures())
        super().__init__(
            f"not switched to generation {check.generation} after {within_s:g} s: {reasons}. "
            "Nothing changed; run `ragstream reindex switch` again once it holds."
        )


def when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def requested_shape(
    active: IndexShape,
    *,
    model: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    precision: str | None = None,
) -> IndexShape:
    """The active shape with what the request changes."""
    return IndexShape(
        active.model if model is None else model,
        active.chunk_size if chunk_size is None else chunk_size,
        active.chunk_overlap if chunk_overlap is None else chunk_overlap,
        active.precision if precision is None else precision,
    )


async def check_request(settings: Settings, shape: IndexShape) -> Generation:
    """The generation a reindex to ``shape`` would start, or ``Refused`` saying why not."""
    state = await read_control_state(settings)
    building = state.building()
    if building is not None:
        raise Refused(
            f"generation {building.number} is being built since {when(building.created_at)} "
            f"({building.shape.describe()}): wait, `ragstream reindex status`, or `ragstream reindex --abort`"
        )
    active = state.active_generation(settings)
    if shape == active.shape:
        raise Refused(
            f"generation {active.number} already serves this shape ({shape.describe()}): give a "
            "--model, --chunk-size, --chunk-overlap or --precision that differs"
        )
    generation = Generation(state.next_number(), shape)
    try:
        generation.settings(settings)
        Chunker(shape.chunk_size, shape.chunk_overlap)
    except ValueError as exc:  # pydantic's ValidationError is one too
        raise Refused(
            f"invalid chunking (size {shape.chunk_size}, overlap {shape.chunk_overlap}): --chunk-size "
            f"must be at least 50 and --chunk-overlap at least 0 and below it ({_first_line(exc)})"
        ) from None
    return generation


def load_model(shape: IndexShape) -> int:
    """Load the shape's model as the consumers will; its vectors' dimension, or ``Refused``."""
    from engines.embedder import Embedder

    try:
        embedder = Embedder(shape.model, precision=cast(Precision, shape.precision))
    except Exception as exc:  # noqa: BLE001 - whatever the loader raises, the answer is "no"
        raise Refused(
            f"model {shape.model!r} cannot be loaded ({type(exc).__name__}: {_first_line(exc)}): give a "
            "sentence-transformers model name in the local cache or a path to one (no download happens)"
        ) from None
    return embedder.dimension


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


async def start_generation(settings: Settings, generation: Generation) -> Generation:
    """Write ``generation/<n>`` (and ``generation/0`` the first time): the consumers' process
    starts building it. Checked again just before, against a reindex started meanwhile."""
    await ensure_topics(settings)
    started = await check_request(settings, generation.shape)
    if started.number != generation.number:
        raise Refused(
            f"another reindex wrote generation {started.number - 1} meanwhile: see `ragstream reindex status`"
        )
    state = await read_control_state(settings)
    records: list[tuple[bytes, bytes | None]] = []
    if state.active.generation == 0 and 0 not in state.generations:
        # From now on generation 0 is a record like any other, so that it can be kept and dropped.
        records.append((generation_key(0), Generation.base(settings).to_json()))
    records.append((generation_key(generation.number), generation.to_json()))
    await publish_control(settings, records)
    return generation


async def follow_build(
    settings: Settings, generation: Generation, on_progress: Callable[[BuildProgress], None]
) -> BuildProgress:
    """Report the build's progress every second until its group has read every change and its
    collection covers the active one's documents; ``Refused`` if it is aborted meanwhile."""
    chroma = await open_chroma(settings)
    async with ControlFollower(settings) as control, LagReader(settings.kafka) as lag:
        while True:
            state = await _confirmed(settings, control.state, _building(generation.number))
            if not _building(generation.number)(state):
                raise _no_longer_building(generation.number)
            progress = await read_progress(settings, lag, chroma, generation)
            on_progress(progress)
            if progress.lag == 0:
                active = state.active_generation(settings)
                if (await check_coverage(settings, chroma, active, generation)).passed:
                    return progress
            await asyncio.sleep(POLL_S)


def _building(number: int) -> Callable[[ControlState], bool]:
    return lambda state: state.role_of(number) == "building"


def _no_longer_building(number: int) -> Refused:
    return Refused(
        f"generation {number} is no longer being built (aborted, or switched to from elsewhere): "
        "see `ragstream reindex status`"
    )


async def _confirmed(
    settings: Settings, followed: ControlState, expected: Callable[[ControlState], bool]
) -> ControlState:
    """``followed`` if it says what is ``expected``, else the topic read afresh: a follower still
    replaying shows generation 0 alone, and a command must not act on that."""
    return followed if expected(followed) else await read_control_state(settings)


@dataclass(frozen=True)
class SwitchCheck:
    """Each condition of a switch to ``generation``, as found at one moment."""

    generation: int
    lag: int
    coverage: Coverage | None  # None: not checked, since the group is still behind
    unready: tuple[str, ...]  # live replicas that do not hold the generation ready

    @property
    def passed(self) -> bool:
        return self.lag == 0 and self.coverage is not None and self.coverage.passed and not self.unready

    def failures(self) -> list[str]:
        failed = []
        if self.lag:
            failed.append(f"its consumer group is {self.lag} changes behind (lag must be 0)")
        if self.coverage is not None and not self.coverage.passed:
            failed.append(f"coverage check failed: {self.coverage.describe()}")
        if self.unready:
            failed.append(
                f"live replica(s) {', '.join(self.unready)} do not report generation {self.generation} "
                "ready (their views are still catching up, or they run a version without generations)"
            )
        return failed


async def _switch_check(
    settings: Settings, state: ControlState, lag: LagReader, chroma: AsyncClientAPI, building: Generation
) -> SwitchCheck:
    progress = await read_progress(settings, lag, chroma, building)
    coverage = None
    if progress.lag == 0:  # before, documents are missing from the new collection anyway
        coverage = await check_coverage(settings, chroma, state.active_generation(settings), building)
    live = state.live_replicas(time.time(), REPLICA_LIVE_S)
    unready = tuple(sorted(r.replica for r in live if building.number not in r.ready))
    return SwitchCheck(building.number, progress.lag, coverage, unready)


async def switch(
    settings: Settings, within_s: float, on_check: Callable[[SwitchCheck], None] = lambda _: None
) -> ActiveGeneration:
    """Make the building generation the active one once every condition holds: its group's lag
    is 0, the coverage check passes and every live replica holds it ready. ``SwitchBlocked`` if
    they do not all hold within ``within_s``."""
    chroma = await open_chroma(settings)
    async with ControlFollower(settings) as control, LagReader(settings.kafka) as lag:
        deadline = time.monotonic() + within_s
        while True:
            state = await _confirmed(settings, control.state, lambda s: s.building() is not None)
            building = state.building()
            if building is None:
                raise Refused(
                    "no generation is being built: start one with `ragstream reindex --chunk-size N` "
                    "(or --model)"
                )
            check = await _switch_check(settings, state, lag, chroma, building)
            on_check(check)
            if check.passed:
                break
            if time.monotonic() >= deadline:
                raise SwitchBlocked(check, within_s)
            await asyncio.sleep(POLL_S)
    # Written from what the topic says now, never from a follower's state that may lag behind it.
    state = await read_control_state(settings)
    if state.building() != building:
        raise _no_longer_building(building.number)
    record = ActiveGeneration(building.number, state.active.generation, time.time())
    # One generation is kept for a rollback: the one switched away from now. One kept from an
    # earlier switch is dropped first, or it would read as being built once no longer the previous.
    older = [n for n in state.generations if n not in (building.number, state.active.generation)]
    await publish_control(
        settings, [*((generation_key(n), None) for n in older), (ACTIVE_KEY, record.to_json())]
    )
    return record


async def wait_serving(
    settings: Settings, generation: int, within_s: float
) -> tuple[list[ReplicaReport], list[ReplicaReport]]:
    """Wait until every live replica serves ``generation``. Returns the live replicas, and those
    of them that still serve another generation after ``within_s``."""
    async with ControlFollower(settings) as control:
        deadline = time.monotonic() + within_s
        while True:
            live = control.state.live_replicas(time.time(), REPLICA_LIVE_S)
            behind = [r for r in live if r.serving != generation]
            if not behind or time.monotonic() >= deadline:
                return live, behind
            await control.wait_changed(POLL_S)


async def _dropped_at(settings: Settings, number: int) -> float | None:
    """When ``generation/<number>`` was tombstoned, while the topic still holds the tombstone."""
    key = generation_key(number)
    records = await read_topic_records(settings.kafka, settings.control_topic)
    found = [r.timestamp / 1000 for r in records if r.key == key and r.value is None]
    return found[-1] if found else None


async def rollback(settings: Settings) -> ActiveGeneration:
    """Make the kept previous generation active again (and keep the current one in its place)."""
    state = await read_control_state(settings)
    current, previous = state.active.generation, state.active.previous
    if previous is None:
        raise NothingToRollBack(
            f"nothing to roll back to: generation {current} serves and no switch has happened"
        )
    if state.role_of(previous) != "kept":
        dropped = await _dropped_at(settings, previous)
        at = when(dropped) if dropped else f"about {when(state.active.switched_at + settings.reindex_keep_s)}"
        raise NothingToRollBack(
            f"nothing to roll back to: generation {previous} was dropped at {at} "
            f"(RAGSTREAM_REINDEX_KEEP_S={settings.reindex_keep_s:g} s after the switch); build it "
            "again with `ragstream reindex` and its shape"
        )
    record = ActiveGeneration(previous, current, time.time())
    await publish_control(settings, [(ACTIVE_KEY, record.to_json())])
    return record


@dataclass(frozen=True)
class AbortResult:
    generation: Generation
    consumers_running: bool
    dropped: bool  # its collection and chunk-log topic are gone


async def consumers_running(settings: Settings, groups: list[str]) -> bool:
    """Whether any of the consumer groups has a member answering now: each group's scaling
    controller (in ``ragstream consume``) reports its answering members on the stats topic every
    few seconds, and reports 0 when it stops."""
    wanted = {f"scaling/{group}".encode() for group in groups}
    latest: dict[bytes, dict] = {}
    for record in await read_topic_records(settings.kafka, settings.stats_topic):
        if record.key in wanted and record.value is not None:
            latest[record.key] = orjson.loads(record.value)
    now = time.time()
    return any(r["actual"] > 0 and now - r["updated_at"] <= CONSUMERS_SILENT_S for r in latest.values())


async def _resources_left(settings: Settings, chroma: AsyncClientAPI, own: Settings) -> list[str]:
    left = []
    if await count_chunks(chroma, own.collection) is not None:
        left.append(f"collection {own.collection}")
    async with LagReader(settings.kafka) as lag:
        if await lag.end_offsets(own.chunks_topic):
            left.append(f"topic {own.chunks_topic}")
    return left


async def abort(settings: Settings, within_s: float) -> AbortResult:
    """Tombstone the building generation's record, then wait up to ``within_s`` for the
    consumers' process to drop its collection and chunk-log topic (when it runs)."""
    state = await read_control_state(settings)
    building = state.building()
    if building is None:
        raise Refused("no generation is being built: nothing to abort (see `ragstream reindex status`)")
    await publish_control(settings, [(generation_key(building.number), None)])
    own = building.settings(settings)
    groups = [state.active_generation(settings).settings(settings).consumer_group, own.consumer_group]
    if not await consumers_running(settings, groups):
        return AbortResult(building, consumers_running=False, dropped=False)
    chroma = await open_chroma(settings)
    deadline = time.monotonic() + within_s
    while left := await _resources_left(settings, chroma, own):
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_S)
    return AbortResult(building, consumers_running=True, dropped=not left)
