"""Feedback: ``POST /v1/feedback`` onto the real broker, and the evaluation it grows, on the real
Chroma server and embedding model."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from typer.testing import CliRunner

from deploy import free_port
from engines.embedder import Embedder
from evaluation import cases_from_feedback, run_feedback_evaluation
from query_api import create_app
from ragstream.cli import app as cli
from schemas.feedback import FeedbackEvent
from schemas.settings import Settings
from streams.topics import ensure_topics

IndexChunks = Callable[..., Awaitable[None]]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

#: (doc_id, text): one chunk per document, on subjects far apart.
CORPUS = [
    (
        "guides/kafka",
        "Apache Kafka stores streams of records in partitioned, replicated commit logs; consumer "
        "groups share the partitions of a topic and commit their offsets.",
    ),
    (
        "recipes/sourdough",
        "To bake sourdough bread, feed the starter the night before and let the dough rise slowly.",
    ),
    (
        "science/photosynthesis",
        "Plants turn sunlight, water and carbon dioxide into sugar and oxygen in their chloroplasts.",
    ),
    (
        "history/lighthouse",
        "The old lighthouse keeper climbed one hundred and twelve steps every evening to light the lamp.",
    ),
    (
        "sport/marathon",
        "A marathon runner trains for months, adding long slow runs each week to build endurance.",
    ),
]
TEXT = dict(CORPUS)


# --- which feedback makes a case (no services) --------------------------------------------------


def _event(**fields: Any) -> FeedbackEvent:
    return FeedbackEvent(**{"query": "q", "rating": 1, **fields})


def test_only_corrections_and_thumbs_up_naming_a_document_become_cases_once_each() -> None:
    selected = cases_from_feedback(
        [
            _event(query="Bread?", request_id="r1", doc_id="recipes/sourdough"),
            _event(query="bread?", request_id="r2", doc_id="recipes/sourdough"),  # same pair
            _event(query="Kafka", request_id="r3", doc_id="recipes/sourdough", rating=-1),
            _event(query="Kafka", answer_id="a1", rating=-1, correct_doc_id="guides/kafka"),
            _event(query="plants", answer_id="a2"),  # a good answer, but which document?
            _event(query="plants", answer_id="a3", doc_id="science/photosynthesis"),
        ]
    )

    assert [(c.query, c.relevant_doc_id) for c in selected.cases] == [
        ("Bread?", "recipes/sourdough"),
        ("Kafka", "guides/kafka"),
        ("plants", "science/photosynthesis"),
    ]
    assert (selected.feedback, selected.duplicates, selected.unconfirmed) == (6, 1, 2)


# --- through the API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feedback_settings(module_settings: Callable[..., Settings]) -> Settings:
    return module_settings("feedback")


@pytest.fixture(scope="module")
async def indexed(feedback_settings: Settings, index_chunks: IndexChunks) -> None:
    """The corpus in Chroma and in the chunk log, the way the consumers write both."""
    settings = feedback_settings
    await ensure_topics(settings)
    texts = [text for _, text in CORPUS]
    metadatas: list[Any] = [
        {
            "doc_id": doc_id,
            "version": 1,
            "chunk_index": 0,
            "chunk_count": 1,
            "source": "tests",
            "content_type": "text/plain",
            "indexed_at": 1_700_000_000.0,
        }
        for doc_id, _ in CORPUS
    ]
    ids = [f"chunk-{doc_id}" for doc_id, _ in CORPUS]
    await index_chunks(settings, ids, texts, metadatas)


@pytest.fixture(scope="module")
async def api(
    feedback_settings: Settings, embedder: Embedder, indexed: None, serve: Serve
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(feedback_settings, embedder=embedder)) as client:
        yield client


async def _record_at(settings: Settings, partition: int, offset: int) -> tuple[bytes | None, dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(settings.feedback_topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        async with asyncio.timeout(10):
            record = await consumer.getone()
        return record.key, orjson.loads(record.value or b"")
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_search_and_answer_responses_carry_the_id_feedback_names(api: httpx.AsyncClient) -> None:
    first = (await api.post("/v1/search", json={"query": "bread", "k": 1})).json()
    second = (await api.post("/v1/search", json={"query": "bread", "k": 1})).json()
    answer = await api.post("/v1/answer", json={"query": "how is bread baked?", "generator": "extractive"})

    assert re.fullmatch(r"[0-9a-f]{32}", first["request_id"])
    assert first["request_id"] != second["request_id"]
    assert answer.status_code == 200, answer.text
    assert re.fullmatch(r"[0-9a-f]{32}", answer.json()["answer_id"])


@pytest.mark.integration
async def test_feedback_on_a_search_result_is_on_the_topic_with_its_fields(
    api: httpx.AsyncClient, feedback_settings: Settings
) -> None:
    search = (await api.post("/v1/search", json={"query": "how do plants make sugar?", "k": 3})).json()
    hit = search["hits"][0]
    body = {
        "query": "how do plants make sugar?",
        "request_id": search["request_id"],
        "doc_id": hit["doc_id"],
        "chunk_id": hit["id"],
        "rating": 1,
        "comment": "exactly this",
    }

    response = await api.post("/v1/feedback", json=body)

    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["topic"] == feedback_settings.feedback_topic
    key, record = await _record_at(feedback_settings, receipt["partition"], receipt["offset"])
    assert {name: record[name] for name in body} == body
    assert record["feedback_id"] == receipt["feedback_id"]
    assert record["schema_version"] == 1
    assert record["correct_doc_id"] is None and record["answer_id"] is None
    assert record["tenant"] is None
    assert record["created_at"] == pytest.approx(receipt["created_at"])
    assert key == FeedbackEvent.model_validate(record).key


@pytest.mark.integration
async def test_feedback_on_an_answer_with_a_correction_is_accepted(
    api: httpx.AsyncClient, feedback_settings: Settings
) -> None:
    body = {
        "query": "who lights the lamp?",
        "answer_id": "a" * 32,
        "rating": -1,
        "correct_doc_id": "history/lighthouse",
    }

    response = await api.post("/v1/feedback", json=body)

    assert response.status_code == 202, response.text
    _, record = await _record_at(feedback_settings, response.json()["partition"], response.json()["offset"])
    assert (record["answer_id"], record["rating"], record["correct_doc_id"]) == (
        "a" * 32,
        -1,
        "history/lighthouse",
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "field", "complaint"),
    [
        ({"rating": 0}, "rating", "rating must be 1 (good) or -1 (bad), got 0"),
        ({"rating": 5}, "rating", "got 5"),
        ({"rating": "1"}, "rating", "got '1'"),
        ({"rating": True}, "rating", "got True"),
        ({"query": "   "}, "query", "more than whitespace"),
        ({"query": ""}, "query", "at least 1 character"),
        ({"request_id": None, "doc_id": None}, None, "name what is rated"),
        ({"doc_id": None}, None, "doc_id is missing"),
        ({"answer_id": "a1"}, None, "not both"),
        ({"correct_doc_id": " padded "}, "correct_doc_id", "surrounding spaces"),
        ({"tenant": "acme"}, "tenant", "Extra inputs are not permitted"),
    ],
)
async def test_invalid_feedback_is_422_saying_what_is_wrong(
    api: httpx.AsyncClient, change: dict[str, Any], field: str | None, complaint: str
) -> None:
    body = {"query": "bread", "request_id": "r" * 32, "doc_id": "recipes/sourdough", "rating": 1, **change}

    response = await api.post("/v1/feedback", json=body)

    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert len(errors) == 1, errors
    assert complaint in errors[0]["msg"]
    assert errors[0]["loc"] == (["body", field] if field else ["body"])


@pytest.mark.integration
async def test_feedback_is_503_when_kafka_is_unreachable(
    feedback_settings: Settings, embedder: Embedder, indexed: None, serve: Serve
) -> None:
    settings = feedback_settings.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{free_port()}", "lexical_startup_timeout_s": 1.0}
    )
    body = {"query": "bread", "request_id": "r1", "doc_id": "recipes/sourdough", "rating": 1}

    async with serve(create_app(settings, embedder=embedder)) as client:
        response = await client.post("/v1/feedback", json=body)

    assert response.status_code == 503
    assert response.json()["detail"].startswith("Kafka did not accept the feedback")


# --- the evaluation it grows --------------------------------------------------------------------


@dataclass(frozen=True)
class Flywheel:
    settings: Settings
    #: (query, doc_id) of every case the posted feedback confirms.
    cases: list[tuple[str, str]]
    feedback: int


@pytest.fixture(scope="module")
async def flywheel(feedback_settings: Settings, embedder: Embedder, indexed: None, serve: Serve) -> Flywheel:
    """Feedback posted through the API onto a feedback topic of its own: two queries that are a
    document's own text, confirmed two ways, a paraphrase, and ratings that confirm nothing."""
    settings = feedback_settings.model_copy(
        update={"feedback_topic": f"{feedback_settings.feedback_topic}-flywheel"}
    )
    await ensure_topics(settings)
    posted = 0
    async with serve(create_app(settings, embedder=embedder)) as api:

        async def post(**body: Any) -> None:
            nonlocal posted
            response = await api.post("/v1/feedback", json=body)
            assert response.status_code == 202, response.text
            posted += 1

        async def search(query: str) -> dict[str, Any]:
            response = await api.post("/v1/search", json={"query": query, "k": 5})
            assert response.status_code == 200, response.text
            return dict(response.json())

        lighthouse = TEXT["history/lighthouse"]
        found = await search(lighthouse)
        wrong = next(hit for hit in found["hits"] if hit["doc_id"] != "history/lighthouse")
        # Down on a wrong hit, with the right document named.
        await post(
            query=lighthouse,
            request_id=found["request_id"],
            doc_id=wrong["doc_id"],
            rating=-1,
            correct_doc_id="history/lighthouse",
        )
        # Up on the hit that is right.
        kafka = TEXT["guides/kafka"]
        found = await search(kafka)
        best = found["hits"][0]
        await post(
            query=kafka, request_id=found["request_id"], doc_id=best["doc_id"], chunk_id=best["id"], rating=1
        )
        # The same pair confirmed again, worded with other spacing: counted once.
        await post(query=f"  {kafka}  ", answer_id="answer-1", rating=1, doc_id="guides/kafka")
        # A paraphrase, corrected on an answer.
        await post(
            query="what do marathon runners do to build endurance?",
            answer_id="answer-2",
            rating=-1,
            correct_doc_id="sport/marathon",
        )
        # Confirms nothing: a thumb down without a correction, a thumb up naming no document.
        await post(query="sourdough", request_id="r-9", doc_id="guides/kafka", rating=-1)
        await post(query="sourdough", answer_id="answer-3", rating=1)
        # Names a document that is not indexed: no retriever could find it.
        await post(query="a deleted page", answer_id="answer-4", rating=-1, correct_doc_id="gone/page")
    return Flywheel(
        settings=settings,
        cases=[
            (lighthouse, "history/lighthouse"),
            (kafka, "guides/kafka"),
            ("what do marathon runners do to build endurance?", "sport/marathon"),
        ],
        feedback=posted,
    )


@pytest.mark.integration
def test_evaluation_from_feedback_scores_the_confirmed_cases_on_the_live_index(
    flywheel: Flywheel, embedder: Embedder, tmp_path: Path
) -> None:
    report = run_feedback_evaluation(flywheel.settings, tmp_path, embedder=embedder)

    assert report.counts == {
        "feedback": flywheel.feedback,
        "unreadable": 0,
        "unconfirmed": 2,
        "duplicates": 1,
        "confirmed_cases": 4,
        "not_indexed": 1,
        "cases": 3,
    }
    for mode in ("vector", "lexical", "hybrid"):
        metrics = report.modes[mode].metrics
        # Two of three queries are their document's own text: found first by every retriever.
        assert metrics["recall@1"] >= 2 / 3, (mode, metrics)
        assert metrics["recall@5"] == 1.0, (mode, metrics)
    assert report.modes["vector"].metrics["mrr"] == 1.0
    assert report.modes["hybrid+rerank"].available is False
    assert report.path is not None and report.path.parent == tmp_path
    assert report.path.name.startswith("eval-feedback-")
    saved = json.loads(report.path.read_text())
    assert saved["source"] == "feedback"
    assert saved["counts"]["cases"] == 3
    assert set(saved["modes"]) == {"vector", "lexical", "hybrid", "hybrid+rerank"}


@pytest.mark.integration
def test_eval_command_from_feedback_prints_the_table_and_saves_the_report(
    flywheel: Flywheel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = flywheel.settings
    names = (
        "bootstrap_servers",
        "chroma_port",
        "collection",
        "chunks_topic",
        "feedback_topic",
        "events_topic",
    )
    for name in names:
        monkeypatch.setenv(f"RAGSTREAM_{name.upper()}", str(getattr(settings, name)))

    result = CliRunner().invoke(cli, ["eval", "--from-feedback", "--results-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "retrieval on feedback" in result.output and "recall@1" in result.output
    (saved,) = tmp_path.glob("eval-feedback-*.json")
    assert json.loads(saved.read_text())["counts"]["cases"] == 3


@pytest.mark.integration
def test_eval_command_from_feedback_says_when_there_is_nothing_to_evaluate(
    feedback_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGSTREAM_BOOTSTRAP_SERVERS", feedback_settings.bootstrap_servers)
    monkeypatch.setenv("RAGSTREAM_CHROMA_PORT", str(feedback_settings.chroma_port))
    monkeypatch.setenv("RAGSTREAM_FEEDBACK_TOPIC", f"never-written-{uuid.uuid4().hex[:8]}")

    result = CliRunner().invoke(cli, ["eval", "--from-feedback", "--results-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "nothing to evaluate" in result.output
    assert not list(tmp_path.iterdir())
