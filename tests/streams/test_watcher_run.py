"""The folder watcher following a real folder, publishing to a list instead of Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

from schemas import DocumentEvent, Settings
from streams.ignore import IGNORE_FILE
from streams.watch_state import WatchStateLocked
from streams.watcher import FolderWatcher


class ListSink:
    """Stands in for Kafka: keeps what is published; can fail the next few publishes."""

    def __init__(self) -> None:
        self.events: list[DocumentEvent] = []
        self.failures_left = 0

    async def publish_many(self, events: Iterable[DocumentEvent]) -> list[DocumentEvent]:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("broker unreachable")
        published = list(events)
        self.events += published
        return published

    def ops(self) -> list[tuple[str, str]]:
        return [(e.op.value, e.doc_id) for e in self.events]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        bootstrap_servers="unused:9092",
        watch_settle_ms=100,
        watch_max_delay_ms=2000,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    return folder


@contextlib.asynccontextmanager
async def running(watcher: FolderWatcher) -> AsyncIterator[FolderWatcher]:
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    ready = asyncio.create_task(watcher.ready.wait())
    await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert watcher.ready.is_set(), "the watcher did not start in time"
    try:
        yield watcher
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_a_created_file_is_published_once_it_is_quiet(root, settings):
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings, namespace="kb")):
        (root / "notes.md").write_text("first notes")
        await until(lambda: len(sink.events) == 1)
    assert sink.ops() == [("upsert", "kb/notes.md")]
    assert sink.events[0].content == "first notes"


async def test_an_editors_save_burst_is_one_upsert(root, settings):
    (root / "notes.md").write_text("draft")
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)) as watcher:
        assert sink.ops() == [("upsert", "notes.md")]
        # vim's way: probe file, backup by rename, write the new file, drop the backup and swap file.
        (root / "4913").write_text("")
        (root / "4913").unlink()
        (root / ".notes.md.swp").write_bytes(b"\x00swap")
        (root / "notes.md").rename(root / "notes.md~")
        (root / "notes.md").write_text("final")
        with (root / "notes.md").open("a") as file:
            file.write(" text")
        (root / "notes.md~").unlink()
        (root / ".notes.md.swp").unlink()
        await until(lambda: len(sink.events) == 2)
        await until(lambda: watcher.pending == 0)
    assert sink.ops() == [("upsert", "notes.md"), ("upsert", "notes.md")]
    assert sink.events[-1].content == "final text"


async def test_touching_a_file_publishes_nothing(root, settings):
    (root / "a.md").write_text("alpha")
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)):
        os.utime(root / "a.md")
        (root / "a.md").write_text("alpha")
        # Written after the touch, so once it is published the touch has been looked at too.
        (root / "sentinel.md").write_text("sentinel")
        await until(lambda: len(sink.events) == 2)
        await asyncio.sleep(0.3)
    assert sink.ops() == [("upsert", "a.md"), ("upsert", "sentinel.md")]


async def test_a_move_is_a_delete_of_the_old_id_and_an_upsert_of_the_new(root, settings):
    (root / "old").mkdir()
    (root / "old" / "a.md").write_text("alpha")
    (root / "b.md").write_text("beta")
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)):
        (root / "b.md").rename(root / "c.md")
        (root / "old").rename(root / "new")
        await until(lambda: len(sink.events) == 6)
    assert sorted(sink.ops()[2:]) == [
        ("delete", "b.md"),
        ("delete", "old/a.md"),
        ("upsert", "c.md"),
        ("upsert", "new/a.md"),
    ]


async def test_a_deleted_file_is_a_delete(root, settings):
    (root / "a.md").write_text("alpha")
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)):
        (root / "a.md").unlink()
        await until(lambda: len(sink.events) == 2)
    assert sink.ops() == [("upsert", "a.md"), ("delete", "a.md")]


async def test_a_restarted_watcher_publishes_only_what_changed_while_it_was_down(root, settings):
    for name in ("kept", "edited", "removed"):
        (root / f"{name}.md").write_text(name)
    async with running(FolderWatcher(root, ListSink(), settings)):
        pass
    (root / "edited.md").write_text("edited while down")
    (root / "removed.md").unlink()
    os.utime(root / "kept.md")
    (root / "added.md").write_text("added while down")

    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)):
        published = sorted(sink.ops())
    assert published == [("delete", "removed.md"), ("upsert", "added.md"), ("upsert", "edited.md")]


async def test_stopping_publishes_the_changes_already_seen(root, settings):
    slow = settings.model_copy(update={"watch_settle_ms": 60_000, "watch_max_delay_ms": 60_000})
    sink = ListSink()
    async with running(FolderWatcher(root, sink, slow)) as watcher:
        (root / "late.md").write_text("written just before stopping")
        await until(lambda: watcher.pending == 1)
        assert sink.events == []
    assert sink.ops() == [("upsert", "late.md")]


async def test_a_failed_publish_is_retried(root, settings):
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)) as watcher:
        sink.failures_left = 1
        (root / "a.md").write_text("alpha")
        await until(lambda: watcher.stats.failed_publishes == 1)
        await until(lambda: len(sink.events) == 1, timeout=15)
    assert sink.ops() == [("upsert", "a.md")]


async def test_editing_the_ignore_file_withdraws_and_restores_documents(root, settings):
    (root / "drafts").mkdir()
    (root / "drafts" / "idea.md").write_text("an idea")
    (root / "keep.md").write_text("kept")
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)):
        (root / IGNORE_FILE).write_text("drafts/\n")
        await until(lambda: len(sink.events) == 3)
        (root / IGNORE_FILE).unlink()
        await until(lambda: len(sink.events) == 4)
    assert sink.ops()[2:] == [("delete", "drafts/idea.md"), ("upsert", "drafts/idea.md")]


async def test_ignored_and_unsupported_files_are_never_published(root, settings):
    (root / IGNORE_FILE).write_text("*.html\n")
    sink = ListSink()
    async with running(FolderWatcher(root, sink, settings)):
        (root / "page.html").write_text("<p>ignored</p>")
        (root / ".hidden.md").write_text("hidden")
        (root / "image.png").write_bytes(b"\x89PNG")
        (root / "sentinel.md").write_text("sentinel")
        await until(lambda: len(sink.events) == 1)
        await asyncio.sleep(0.3)
    assert sink.ops() == [("upsert", "sentinel.md")]


async def test_a_second_watcher_of_the_same_folder_is_refused(root, settings):
    async with running(FolderWatcher(root, ListSink(), settings)):
        with pytest.raises(WatchStateLocked):
            async with running(FolderWatcher(root, ListSink(), settings)):
                pass
