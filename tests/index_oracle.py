"""The expected index after a stream of events: apply them once, in order, in memory."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from engines.chunking import Chunker
from schemas import DocumentEvent, EventOp

WORDS = [
    "river",
    "stone",
    "ledger",
    "lantern",
    "orbit",
    "cedar",
    "harbor",
    "signal",
    "quartz",
    "meadow",
    "falcon",
    "ember",
    "tundra",
    "glacier",
    "copper",
    "violet",
    "summit",
    "canyon",
    "willow",
    "beacon",
    "prism",
    "delta",
    "marble",
    "thistle",
    "nectar",
]


def paragraph(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))) + "."


def event_stream(seed: int, documents: int, events: int, prefix: str) -> list[DocumentEvent]:
    """Mixed upserts, one-paragraph edits, shrinks, growths and deletes; versions grow per document."""
    rng = random.Random(seed)
    contents: dict[str, list[str]] = {}
    versions: dict[str, int] = {}
    stream = []
    for _ in range(events):
        doc_id = f"{prefix}/doc-{rng.randrange(documents)}"
        versions[doc_id] = versions.get(doc_id, 0) + 1
        paragraphs = contents.get(doc_id)
        roll = rng.random()
        if paragraphs is not None and roll < 0.1:
            del contents[doc_id]
            stream.append(DocumentEvent(doc_id=doc_id, op=EventOp.DELETE, version=versions[doc_id]))
            continue
        if paragraphs is None or roll < 0.25:
            paragraphs = [paragraph(rng) for _ in range(rng.randint(1, 5))]
        elif roll < 0.75:
            paragraphs = list(paragraphs)
            paragraphs[rng.randrange(len(paragraphs))] = paragraph(rng)
        elif roll < 0.9 and len(paragraphs) > 1:
            paragraphs = paragraphs[: rng.randint(1, len(paragraphs) - 1)]
        else:
            paragraphs = [*paragraphs, paragraph(rng)]
        contents[doc_id] = paragraphs
        stream.append(
            DocumentEvent(
                doc_id=doc_id,
                op=EventOp.UPSERT,
                content="\n\n".join(paragraphs),
                version=versions[doc_id],
                source="faults",
                metadata={"seed": seed},
            )
        )
    return stream


@dataclass(frozen=True)
class ExpectedChunk:
    doc_id: str
    text: str
    version: int
    chunk_index: int


def expected_index(events: list[DocumentEvent], chunker: Chunker) -> dict[str, ExpectedChunk]:
    """chunk id → chunk, as if every event had been applied exactly once, in order."""
    latest: dict[str, DocumentEvent] = {}
    for event in events:
        current = latest.get(event.doc_id)
        if current is None or event.version >= current.version:
            latest[event.doc_id] = event
    expected = {}
    for doc_id, event in latest.items():
        if event.op is EventOp.DELETE:
            continue
        for chunk in chunker.split(doc_id, event.content):
            expected[chunk.id] = ExpectedChunk(doc_id, chunk.text, event.version, chunk.index)
    return expected


def differences(expected: dict[str, ExpectedChunk], actual: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences between the expected index and the collection's content."""
    problems = []
    missing = expected.keys() - actual.keys()
    stale = actual.keys() - expected.keys()
    if missing:
        problems.append(f"{len(missing)} chunks missing, e.g. {[expected[i] for i in sorted(missing)[:3]]}")
    if stale:
        problems.append(f"{len(stale)} stale chunks, e.g. {[actual[i] for i in sorted(stale)[:3]]}")
    for chunk_id in expected.keys() & actual.keys():
        want, got = expected[chunk_id], actual[chunk_id]
        if (got["text"], got["metadata"]["version"], got["metadata"]["chunk_index"]) != (
            want.text,
            want.version,
            want.chunk_index,
        ):
            problems.append(f"chunk {chunk_id} differs: expected {want}, found {got}")
    return problems
