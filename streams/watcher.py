"""``ragstream watch DIR``: a folder's documents, kept published as they change.

On start the watcher reconciles the folder with what it published before (``watch_state``), then
follows watchfiles' notifications. A notification only marks a path as worth a look; once the
path has been quiet for ``watch_settle_ms`` (an editor's save is a burst of renames and writes),
``FolderSync`` compares it with the state by content hash and publishes what really changed:

    awatch ──paths──▶ Coalescer ──quiet paths──▶ FolderSync ──events──▶ EventSink ──acked──▶ state

The state records an event only once the sink acknowledged it, so a crash or a failed publish
is made good by the next pass over the same path, at the latest on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiokafka.errors import KafkaError
from watchfiles import Change as FileChange
from watchfiles import awatch

from schemas import DocumentEvent, EventOp, Settings
from streams.errors import describe
from streams.files import SkippedFile
from streams.ignore import IGNORE_FILE
from streams.watch_state import WatchState, state_file
from streams.watch_sync import Change, FolderSync, covering, is_covered, normalise_namespace

__all__ = ["Coalescer", "EventSink", "FolderWatcher", "WatchStats", "watch_folder"]

log = logging.getLogger(__name__)

#: Events per publish; the state is saved after each such batch is acknowledged.
PUBLISH_BATCH = 200
#: Bytes of content per publish, so that a first pass over a large folder stays small in memory.
PUBLISH_BATCH_BYTES = 32 * 1024 * 1024
#: watchfiles groups notifications until `step` ms pass without one (at most `debounce` ms).
WATCH_STEP_MS = 50
WATCH_DEBOUNCE_MS = 1600
#: Waits before retrying paths whose events could not be published.
RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class EventSink(Protocol):
    """Where the watcher's events go: ``EventPublisher`` in production, a list in unit tests.

    ``publish_many`` returns once every event is acknowledged, or raises.
    """

    async def publish_many(self, events: Iterable[DocumentEvent]) -> Sequence[object]: ...


@dataclass
class WatchStats:
    upserts: int = 0
    deletes: int = 0
    skipped: int = 0
    failed_publishes: int = 0

    @property
    def published(self) -> int:
        return self.upserts + self.deletes


class Coalescer:
    """Paths seen changing, each due once it has been quiet for ``settle`` seconds.

    A path that never goes quiet (a log being appended to) is due ``max_delay`` seconds after its
    first change anyway. Times are the caller's clock, in seconds.
    """

    def __init__(self, settle: float, max_delay: float) -> None:
        self.settle = settle
        self.max_delay = max(max_delay, settle)
        self._pending: dict[str, tuple[float, float]] = {}  # path → (first seen, due)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, paths: Iterable[str], now: float) -> None:
        for path in paths:
            first = self._pending[path][0] if path in self._pending else now
            self._pending[path] = (first, min(now + self.settle, first + self.max_delay))

    def defer(self, paths: Iterable[str], until: float) -> None:
        """Make ``paths`` due at ``until`` (a retry), keeping any that is already due later."""
        for path in paths:
            first, due = self._pending.get(path, (until, until))
            self._pending[path] = (min(first, until), max(due, until))

    def next_due(self) -> float | None:
        return min((due for _, due in self._pending.values()), default=None)

    def pop_due(self, now: float) -> list[str]:
        """The due paths, minus those inside a due folder; paths the folder covers are dropped too."""
        due = covering(path for path, (_, at) in self._pending.items() if at <= now)
        if due:
            chosen = set(due)
            for path in [path for path in self._pending if is_covered(path, chosen)]:
                del self._pending[path]
        return due

    def pop_all(self) -> list[str]:
        paths = covering(self._pending)
        self._pending.clear()
        return paths


class FolderWatcher:
    """Keeps the documents of ``root`` published to ``sink`` until ``run``'s stop event is set.

    ``ready`` is set once the start-up reconciliation is published and changes are followed.
    """

    def __init__(self, root: Path, sink: EventSink, settings: Settings, namespace: str | None = None) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"not a folder: {root}")
        self.namespace = normalise_namespace(namespace)
        self.sink = sink
        self.settings = settings
        self.state_path = state_file(
            settings.state_dir,
            self.root,
            self.namespace,
            f"{settings.bootstrap_servers}/{settings.events_topic}",
        )
        self.stats = WatchStats()
        self.ready = asyncio.Event()
        self._pending = Coalescer(settings.watch_settle_ms / 1000, settings.watch_max_delay_ms / 1000)
        self._wake = asyncio.Event()
        self._failures = 0

    @property
    def pending(self) -> int:
        """Paths seen changing and not yet looked at."""
        return len(self._pending)

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile, then publish changes until ``stop`` is set; changes already seen by then
        are published before it returns."""
        description = {
            "root": str(self.root),
            "namespace": self.namespace or "",
            "target": f"{self.settings.bootstrap_servers}/{self.settings.events_topic}",
        }
        with WatchState(self.state_path, description=description) as state:
            sync = FolderSync(
                self.root, state, max_bytes=self.settings.max_document_bytes, namespace=self.namespace
            )
            watching = asyncio.create_task(self._watch(sync, stop), name=f"awatch {self.root}")
            # awatch registers its watches in its first step, before it first awaits: once this
            # yields, any change after the reconciliation below is also notified.
            await asyncio.sleep(0)
            try:
                await self._reconcile(sync)
                self.ready.set()
                log.info("watching %s (state in %s)", self.root, self.state_path)
                await self._follow(sync, watching)
            finally:
                stop.set()
                await asyncio.wait([watching])
                # Its error, if it ended on one, is what _follow raised; else it comes second to
                # the error the watcher is leaving on, and is logged rather than raised over it.
                error = None if watching.cancelled() else watching.exception()
                if error is not None and error is not sys.exception():
                    log.warning("watching %s failed too: %s", self.root, describe(error))
        log.info(
            "stopped watching %s: %d upserts, %d deletes published, %d files skipped",
            self.root,
            self.stats.upserts,
            self.stats.deletes,
            self.stats.skipped,
        )

    async def _watch(self, sync: FolderSync, stop: asyncio.Event) -> None:
        def wanted(_: FileChange, path: str) -> bool:
            relative = self._relative(path)
            return relative is not None and (relative == IGNORE_FILE or not sync.rules.ignores(relative))

        loop = asyncio.get_running_loop()
        try:
            async for changes in awatch(
                self.root,
                watch_filter=wanted,
                debounce=WATCH_DEBOUNCE_MS,
                step=WATCH_STEP_MS,
                stop_event=stop,
                ignore_permission_denied=True,
            ):
                paths = (self._relative(path) for _, path in changes)
                self._pending.add((p for p in paths if p is not None), loop.time())
                self._wake.set()
        finally:
            self._wake.set()

    async def _reconcile(self, sync: FolderSync) -> None:
        await self._publish(sync, [""], trust_stat=True)
        log.info(
            "reconciled %s with its state: %d documents, %d upserts and %d deletes published, "
            "%d unchanged, %d skipped",
            self.root,
            sync.scanned,
            self.stats.upserts,
            self.stats.deletes,
            sync.unchanged,
            self.stats.skipped,
        )

    async def _follow(self, sync: FolderSync, watching: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Cleared before looking, so a notification arriving while a batch is published wakes
            # the next wait instead of being lost.
            self._wake.clear()
            if watching.done():
                break
            due = self._pending.pop_due(loop.time())
            if due:
                await self._process(sync, due, final=False)
                continue
            next_due = self._pending.next_due()
            timeout = None if next_due is None else max(next_due - loop.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        # Stopping: what was already noticed is published now rather than after its quiet time.
        rest = self._pending.pop_all()
        if rest:
            log.info("publishing %d path(s) changed just before stopping", len(rest))
            await self._process(sync, rest, final=True)
        watching.result()

    async def _process(self, sync: FolderSync, paths: list[str], *, final: bool) -> None:
        try:
            if "" in paths or IGNORE_FILE in paths:
                # New ignore rules can take in or leave out any file: look at the whole folder.
                await self._publish(sync, [p for p in paths if p not in ("", IGNORE_FILE)], trust_stat=False)
                sync.reload_rules()
                await self._publish(sync, [""], trust_stat=True)
            else:
                await self._publish(sync, [*paths, *sync.links_into(paths)], trust_stat=False)
            self._failures = 0
        except (KafkaError, OSError) as exc:
            # Kafka away or refusing, a file or the state unreadable or unwritable for now.
            self._failed(paths, exc, final=final)
        except Exception as exc:
            # The watcher runs for days: an error nobody foresaw on one batch of paths must not
            # end it. Logged with its traceback, and retried like any other failure.
            log.exception("unexpected error publishing changes under %s", paths)
            self._failed(paths, exc, final=final)

    def _failed(self, paths: list[str], exc: Exception, *, final: bool) -> None:
        """The state did not record these paths, so looking at them again publishes them."""
        self.stats.failed_publishes += 1
        if final:
            log.warning(
                "could not publish changes under %s before stopping (%s); the next start publishes them",
                paths,
                describe(exc),
            )
            return
        delay = RETRY_DELAYS_S[min(self._failures, len(RETRY_DELAYS_S) - 1)]
        self._failures += 1
        log.warning(
            "could not publish changes (%s); retrying %d path(s) in %.0f s", describe(exc), len(paths), delay
        )
        self._pending.defer(paths, asyncio.get_running_loop().time() + delay)

    async def _publish(self, sync: FolderSync, prefixes: list[str], *, trust_stat: bool) -> None:
        """Publish the changes under ``prefixes`` batch by batch, recording each acknowledged one."""
        if not prefixes:
            return
        planned = sync.changes(prefixes, trust_stat=trust_stat)
        while True:
            batch = await asyncio.to_thread(_next_batch, planned)
            if not batch:
                return
            changes = []
            for item in batch:
                if isinstance(item, SkippedFile):
                    self.stats.skipped += 1
                    # A file name need not be valid UTF-8; the log line must be.
                    shown = str(item.path).encode("utf-8", "backslashreplace").decode()
                    log.warning("skipped %s: %s", shown, item.reason)
                else:
                    changes.append(item)
            events = [change.event for change in changes if change.event is not None]
            if events:
                await self.sink.publish_many(events)
            if changes:
                await asyncio.to_thread(sync.apply, changes)
            for change in changes:
                if change.event is not None:
                    self._count(change)

    def _count(self, change: Change) -> None:
        assert change.event is not None
        if change.event.op is EventOp.UPSERT:
            self.stats.upserts += 1
        else:
            self.stats.deletes += 1
        log.info("published %s %s (%s)", change.event.op.value, change.event.doc_id, change.reason)

    def _relative(self, path: str) -> str | None:
        """``path`` relative to the root, ``""`` for the root itself, None for a path outside."""
        try:
            relative = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return "" if relative == "." else relative


def _next_batch(planned: Iterator[Change | SkippedFile]) -> list[Change | SkippedFile]:
    """Up to PUBLISH_BATCH events or PUBLISH_BATCH_BYTES of content from the plan; [] at its end."""
    batch: list[Change | SkippedFile] = []
    events = size = 0
    for item in planned:
        batch.append(item)
        if isinstance(item, Change) and item.event is not None:
            events += 1
            size += len(item.event.content)
            if events >= PUBLISH_BATCH or size >= PUBLISH_BATCH_BYTES:
                break
    return batch


async def watch_folder(settings: Settings, root: Path, namespace: str | None = None) -> WatchStats:
    """Run a ``FolderWatcher`` publishing to Kafka until SIGINT or SIGTERM."""
    from streams.publisher import EventPublisher
    from streams.topics import ensure_topics

    namespace = normalise_namespace(namespace)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s: publishing the changes in flight, then stopping (again to force)", sig.name)
        stop.set()
        # A second signal gets the default behaviour: an impatient user can still interrupt.
        loop.remove_signal_handler(sig)

    await ensure_topics(settings)
    async with EventPublisher(settings.kafka, settings.events_topic, settings.max_record_bytes) as publisher:
        watcher = FolderWatcher(root, publisher, settings, namespace)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await watcher.run(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return watcher.stats
