"""A watched folder → Kafka → Ray consumers → Chroma → search API, observed the way a user would."""

from __future__ import annotations

import os
import uuid

import pytest
from pdf_samples import pdf_document

pytestmark = pytest.mark.integration


def text_about(subject: str) -> tuple[str, str]:
    """A paragraph no other test indexes, and a word that finds it."""
    word = f"zq{uuid.uuid4().hex[:10]}"
    return word, f"The {subject} procedure, code {word}, is reviewed every spring by the {subject} team."


async def found(pipeline, doc_id: str, query: str) -> list[dict]:
    return await pipeline.search(query, k=5, doc_id=doc_id)


async def is_indexed(pipeline, doc_id: str) -> bool:
    response = await pipeline.api.get(f"/v1/documents/{doc_id}")
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


async def events_in_topic(pipeline) -> int:
    return await pipeline.events_published()


async def test_a_created_file_becomes_searchable(pipeline, watched_folder):
    watcher = await watched_folder.start()
    _, text = text_about("lighthouse lamp replacement")
    (watched_folder.root / "guides").mkdir()
    (watched_folder.root / "guides" / "lamps.md").write_text(f"# Lamps\n\n{text}")
    await watched_folder.published(1)
    await pipeline.drain()

    hits = await pipeline.search(text, k=3)
    assert hits and hits[0]["doc_id"] == watched_folder.doc_id("guides/lamps.md")
    assert text in hits[0]["text"]
    assert watcher.stats.upserts == 1


async def test_an_edited_file_is_found_with_its_new_text_only(pipeline, watched_folder):
    path = watched_folder.root / "tides.md"
    _, before = text_about("tide table")
    path.write_text(before)
    await watched_folder.start()
    await watched_folder.published(1)
    await pipeline.drain()

    _, after = text_about("harbour dredging")
    path.write_text(after)
    await watched_folder.published(2)
    await pipeline.drain()

    chunks = await pipeline.chunks_of(watched_folder.doc_id("tides.md"))
    assert [c["text"] for c in chunks] == [after]


async def test_a_moved_file_is_found_under_its_new_id_and_not_its_old_one(pipeline, watched_folder):
    _, text = text_about("buoy inspection")
    (watched_folder.root / "draft.md").write_text(text)
    await watched_folder.start()
    await watched_folder.published(1)
    await pipeline.drain()

    (watched_folder.root / "archive").mkdir()
    (watched_folder.root / "draft.md").rename(watched_folder.root / "archive" / "buoys.md")
    await watched_folder.published(3)
    await pipeline.drain()

    assert not await is_indexed(pipeline, watched_folder.doc_id("draft.md"))
    hits = await found(pipeline, watched_folder.doc_id("archive/buoys.md"), text)
    assert hits and hits[0]["text"] == text


async def test_a_deleted_file_is_gone_from_the_index(pipeline, watched_folder):
    word, text = text_about("fog signal")
    (watched_folder.root / "fog.txt").write_text(text)
    await watched_folder.start()
    await watched_folder.published(1)
    await pipeline.drain()
    assert await is_indexed(pipeline, watched_folder.doc_id("fog.txt"))

    (watched_folder.root / "fog.txt").unlink()
    await watched_folder.published(2)
    await pipeline.drain()

    assert not await is_indexed(pipeline, watched_folder.doc_id("fog.txt"))
    assert all(hit["doc_id"] != watched_folder.doc_id("fog.txt") for hit in await pipeline.search(word))


async def test_a_restarted_watcher_publishes_only_what_changed_while_it_was_down(pipeline, watched_folder):
    root = watched_folder.root
    texts = {name: text_about(name)[1] for name in ("kept", "edited", "removed")}
    for name, text in texts.items():
        (root / f"{name}.md").write_text(text)
    await watched_folder.start()
    await watched_folder.published(3)
    await watched_folder.stop()
    await pipeline.drain()

    _, edited = text_about("edited while down")
    (root / "edited.md").write_text(edited)
    (root / "removed.md").unlink()
    os.utime(root / "kept.md")
    _, added = text_about("added while down")
    (root / "added.md").write_text(added)
    before = await events_in_topic(pipeline)

    watcher = await watched_folder.start()
    await pipeline.drain()

    assert (watcher.stats.upserts, watcher.stats.deletes) == (2, 1)
    assert await events_in_topic(pipeline) - before == 3
    assert [c["text"] for c in await pipeline.chunks_of(watched_folder.doc_id("edited.md"))] == [edited]
    assert [c["text"] for c in await pipeline.chunks_of(watched_folder.doc_id("added.md"))] == [added]
    assert not await is_indexed(pipeline, watched_folder.doc_id("removed.md"))
    assert await is_indexed(pipeline, watched_folder.doc_id("kept.md"))


async def test_touching_a_file_costs_no_event(pipeline, watched_folder):
    _, text = text_about("keeper's log")
    (watched_folder.root / "log.md").write_text(text)
    await watched_folder.start()
    await watched_folder.published(1)
    await pipeline.drain()
    before = await events_in_topic(pipeline)

    os.utime(watched_folder.root / "log.md")
    (watched_folder.root / "log.md").write_text(text)
    # Written after the touch: once it is published, the touch has been looked at as well.
    (watched_folder.root / "sentinel.md").write_text(text_about("sentinel")[1])
    await watched_folder.published(2)
    await pipeline.drain()

    assert await events_in_topic(pipeline) - before == 1


async def test_a_pdf_is_searchable_by_its_text(pipeline, watched_folder):
    word = f"zq{uuid.uuid4().hex[:10]}"
    lines = [f"Quarterly lighthouse maintenance report {word}.", "The lamp was replaced in March."]
    (watched_folder.root / "reports").mkdir()
    (watched_folder.root / "reports" / "q1.pdf").write_bytes(pdf_document(*lines))
    await watched_folder.start()
    await watched_folder.published(1)
    await pipeline.drain()

    doc_id = watched_folder.doc_id("reports/q1.pdf")
    hits = await pipeline.search(" ".join(lines), k=3)
    assert hits and hits[0]["doc_id"] == doc_id
    assert "The lamp was replaced in March." in hits[0]["text"] and word in hits[0]["text"]
