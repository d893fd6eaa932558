"""The BM25 index, and the index as a view of the chunk log (real broker)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fastapi import FastAPI

from deploy import free_port
from engines.embedder import Embedder
from query_api import create_app
from query_api.chunk_log_view import ChunkLogView
from query_api.filters import Condition, SearchFilter
from query_api.lexical import LexicalIndex
from schemas.chunk_log import chunk_record
from schemas.kafka_connection import KafkaConnection
from schemas.settings import Settings

Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


# --- the index alone ---------------------------------------------------------------------------


def change(chunk_id: str, doc_id: str, text: str, **metadata: Any) -> tuple[str, bytes]:
    """A chunk as the consumers log it."""
    meta = {"doc_id": doc_id, "version": 1, "source": "wiki", "indexed_at": 1_700_000_000.0, **metadata}
    return chunk_id, chunk_record(chunk_id, text, meta)


CORPUS = [
    change("c1", "handbook/onboarding", "Every note about onboarding: laptops, badges and accounts."),
    change(
        "c2",
        "handbook/oncall",
        "A note on call rotations: the pager, escalation and the runbook.",
        version=3,
        indexed_at=1_700_000_300.0,
    ),
    change("c3", "handbook-old/oncall", "An old note on call rotations.", version=2, source="archive"),
    change(
        "c4",
        "recipes/bread v2",
        "Note: baking sourdough bread needs a starter.",
        team="kitchen",
        public=True,
        year=2021,
    ),
    change(
        "c5",
        "recipes/soup",
        "Note: the soup simmers for an hour.",
        team="kitchen",
        public=False,
        year=2019.0,
        **{"a.b": 7},
    ),
    change(
        "c6",
        "science/photosynthesis",
        "A note on chloroplasts and the zyxquartz enzyme.",
        version=5,
        indexed_at=1_700_000_500.5,
        team="science",
    ),
]


@pytest.fixture
def index() -> Iterator[LexicalIndex]:
    lexical = LexicalIndex()
    lexical.apply(CORPUS)
    yield lexical
    lexical.close()


def ids(hits: list[Any]) -> list[str]:
    return [hit.id for hit in hits]


def test_a_rare_exact_term_ranks_its_chunk_first(index: LexicalIndex) -> None:
    hits = index.search("what is zyxquartz?", 3)

    assert ids(hits) == ["c6"]
    assert hits[0].doc_id == "science/photosynthesis"
    assert hits[0].text == "A note on chloroplasts and the zyxquartz enzyme."
    assert hits[0].metadata["team"] == "science"
    assert hits[0].score > 0


def test_more_matching_terms_rank_higher(index: LexicalIndex) -> None:
    hits = index.search("call rotations runbook", 10)

    assert ids(hits)[:2] == ["c2", "c3"]
    assert hits[0].score > hits[1].score


def test_word_forms_match_by_their_stem(index: LexicalIndex) -> None:
    assert ids(index.search("bake", 10)) == ["c4"]
    assert ids(index.search("simmering", 10)) == ["c5"]


def test_equal_scores_are_ordered_by_chunk_id_whatever_the_order_of_indexing() -> None:
    lexical = LexicalIndex()
    # Written in two commits, in reverse order: tantivy alone would order the ties by position.
    lexical.apply([change(f"t{i}", f"d/{i}", "identical twin text") for i in (9, 8, 7)])
    lexical.apply([change(f"t{i}", f"d/{i}", "identical twin text") for i in (6, 5, 4, 3, 2, 1)])
    try:
        first_page = ids(lexical.search("twin", 3))
        all_hits = ids(lexical.search("twin", 20))
    finally:
        lexical.close()

    assert all_hits == [f"t{i}" for i in range(1, 10)]
    assert first_page == ["t1", "t2", "t3"]


def assert_ranks_like_a_rebuilt_index(
    history: list[list[tuple[str, bytes | None]]], final: list[tuple[str, bytes]], query: str
) -> None:
    """An index that applied ``history`` batch by batch ranks ``query`` as one built from ``final``."""
    followed, rebuilt = LexicalIndex(), LexicalIndex()
    try:
        for batch in history:
            followed.apply(batch)
        rebuilt.apply(final)
        seen = [(chunk.id, chunk.score) for chunk in followed.ranked(query, len(final))]
        fresh = [(chunk.id, chunk.score) for chunk in rebuilt.ranked(query, len(final))]
    finally:
        followed.close()
        rebuilt.close()

    assert [chunk_id for chunk_id, _ in seen] == [chunk_id for chunk_id, _ in fresh]
    assert [score for _, score in seen] == pytest.approx([score for _, score in fresh], rel=0.02)


def test_an_index_that_followed_edits_ranks_like_one_built_from_the_final_state() -> None:
    final = [change(f"f{i}", f"d/{i}", "kiwi " * (i % 4 + 1) + "orchard rows " * (i % 3)) for i in range(12)]
    # Edits and deletes leave deleted chunks in tantivy's statistics until it merges them.
    history: list[list[tuple[str, bytes | None]]] = [
        [change(f"f{i}", f"d/{i}", "kiwi kiwi kiwi old text") for i in range(30)],
        [(f"f{i}", None) for i in range(12, 30)],
        *([item] for item in final),
    ]
    assert_ranks_like_a_rebuilt_index(history, final, "kiwi orchard")


def test_chunks_rewritten_as_malformed_records_leave_the_term_statistics_too() -> None:
    # A record that cannot be parsed removes its chunk: its terms must stop counting for BM25.
    # Every text three words long, so that the deleted ones leave the average length as it is.
    final = [change(f"f{i}", f"d/{i}", "plum grove tree" if i % 2 else "plum stone tree") for i in range(10)]
    history: list[list[tuple[str, bytes | None]]] = [
        [*final, *(change(f"g{i}", f"e/{i}", "plum plum grove") for i in range(20))],
        [(f"g{i}", b"not json") for i in range(10)],
        [(f"g{i}", None) for i in range(10, 20)],
    ]
    assert_ranks_like_a_rebuilt_index(history, final, "plum grove")


def test_a_query_without_words_finds_nothing(index: LexicalIndex) -> None:
    assert index.search("?!  ...", 10) == []


def test_an_upsert_replaces_the_chunk_text(index: LexicalIndex) -> None:
    index.apply([change("c6", "science/photosynthesis", "A note on chloroplasts and chlorophyll.")])

    assert index.search("zyxquartz", 10) == []
    assert ids(index.search("chlorophyll", 10)) == ["c6"]
    assert index.num_chunks == len(CORPUS)


def test_ranking_names_ids_and_scores_as_search_does_without_loading_records(index: LexicalIndex) -> None:
    ranked = index.ranked("note on call rotations", 4)
    hits = index.search("note on call rotations", 4)

    assert [(chunk.id, chunk.score) for chunk in ranked] == [(hit.id, hit.score) for hit in hits]
    assert ranked[0].id in {"c2", "c3"}


def test_records_are_what_the_log_said_and_unknown_ids_are_left_out(index: LexicalIndex) -> None:
    records = index.records(["c4", "nope", "c1", "c4"])

    assert set(records) == {"c4", "c1"}
    assert records["c4"].doc_id == "recipes/bread v2"
    assert records["c4"].text == "Note: baking sourdough bread needs a starter."
    assert records["c4"].metadata["year"] == 2021 and records["c4"].metadata["public"] is True
    assert index.records([]) == {}


def test_a_chunk_rewritten_many_times_ranks_once_with_its_last_record(index: LexicalIndex) -> None:
    for round_ in range(5):
        index.apply([change("c6", "science/photosynthesis", f"zyxquartz enzyme, revision {round_}.")])
    index.apply([("c1", None), change("c1", "handbook/onboarding", "zyxquartz badges")])

    ranked = index.ranked("zyxquartz", 10)
    assert sorted(chunk.id for chunk in ranked) == ["c1", "c6"]
    assert index.records(["c6"])["c6"].text == "zyxquartz enzyme, revision 4."
    index.apply([("c6", None)])
    assert [chunk.id for chunk in index.ranked("zyxquartz", 10)] == ["c1"]
    assert index.records(["c6"]) == {}


def test_a_tombstone_deletes_the_chunk(index: LexicalIndex) -> None:
    index.apply([("c6", None)])

    assert index.search("zyxquartz", 10) == []
    assert index.num_chunks == len(CORPUS) - 1


def test_the_last_change_of_a_chunk_in_one_batch_wins(index: LexicalIndex) -> None:
    index.apply(
        [
            change("c7", "d/7", "first words"),
            ("c7", None),
            change("c8", "d/8", "kept words"),
            change("c7", "d/7", "final words"),
        ]
    )

    assert sorted(ids(index.search("words", 10))) == ["c7", "c8"]
    assert index.search("first", 10) == []


def test_a_malformed_record_removes_the_chunk_rather_than_keep_stale_text(index: LexicalIndex) -> None:
    index.apply([("c6", b"not json")])

    assert index.search("zyxquartz", 10) == []
    assert index.records(["c6"]) == {}


FILTERS = {
    "doc_id equality": SearchFilter((Condition("doc_id", "$eq", "handbook/oncall"),)),
    "source equality": SearchFilter((Condition("source", "$eq", "archive"),)),
    "doc_id prefix": SearchFilter(doc_id_prefix="handbook/"),
    "prefix with odd characters": SearchFilter(doc_id_prefix="recipes/bread v"),
    "prefix matching nothing": SearchFilter(doc_id_prefix="handbook/x"),
    "version range": SearchFilter((Condition("version", "$gte", 2), Condition("version", "$lt", 5))),
    "indexed_at range": SearchFilter((Condition("indexed_at", "$gt", 1_700_000_000.0),)),
    "float bound on integers": SearchFilter((Condition("version", "$lte", 2.5),)),
    "number equality across int and float": SearchFilter((Condition("year", "$eq", 2019),)),
    "boolean": SearchFilter((Condition("public", "$eq", True),)),
    "in": SearchFilter((Condition("team", "$in", ["science", "kitchen"]),)),
    "not equal": SearchFilter((Condition("team", "$ne", "kitchen"),)),
    "not in": SearchFilter((Condition("source", "$nin", ["archive"]),)),
    "string is not a number": SearchFilter((Condition("year", "$eq", "2021"),)),
    "range on a key with a dot": SearchFilter((Condition("a.b", "$gt", 5),)),
    "equality on a key with a dot": SearchFilter((Condition("a.b", "$eq", 7),)),
    "prefix and conditions together": SearchFilter(
        (Condition("version", "$gte", 2),), doc_id_prefix="handbook"
    ),
}


@pytest.mark.parametrize("search_filter", FILTERS.values(), ids=FILTERS.keys())
def test_filters_keep_exactly_the_chunks_whose_metadata_matches(
    index: LexicalIndex, search_filter: SearchFilter
) -> None:
    expected = set()
    for chunk_id, value in CORPUS:
        metadata = orjson.loads(value)["metadata"]
        if search_filter.matches(metadata):
            expected.add(chunk_id)

    # "note" is in every chunk, so the filter alone decides.
    assert set(ids(index.search("note", 100, search_filter))) == expected


def test_the_python_predicate_agrees_with_the_expected_sets() -> None:
    # The reference the test above compares against, checked by hand on a few cases.
    metadata = {"doc_id": "recipes/soup", "year": 2019.0, "public": False, "a.b": 7}
    assert SearchFilter((Condition("year", "$eq", 2019),)).matches(metadata)
    assert not SearchFilter((Condition("year", "$eq", "2019"),)).matches(metadata)
    assert not SearchFilter((Condition("public", "$eq", 0),)).matches(metadata)
    assert SearchFilter((Condition("team", "$ne", "kitchen"),)).matches(metadata)
    assert not SearchFilter((Condition("team", "$gte", 0),)).matches(metadata)
    assert SearchFilter(doc_id_prefix="recipes/").matches(metadata)


def test_filters_do_not_change_the_bm25_scores(index: LexicalIndex) -> None:
    unfiltered = {hit.id: hit.score for hit in index.search("call rotations", 10)}
    filtered = index.search("call rotations", 10, FILTERS["doc_id prefix"])

    assert filtered and all(hit.score == pytest.approx(unfiltered[hit.id]) for hit in filtered)


def test_a_condition_checked_in_python_still_fills_the_page() -> None:
    lexical = LexicalIndex()
    # Many better-scoring chunks fail the filter; the few that pass must still be found.
    lexical.apply(change(f"x{i}", f"d/{i}", "needle " * 5, **{"a.b": 0}) for i in range(50))
    lexical.apply(
        [change("y1", "d/y1", "needle", **{"a.b": 9}), change("y2", "d/y2", "needle", **{"a.b": 9})]
    )
    try:
        hits = lexical.search("needle", 2, SearchFilter((Condition("a.b", "$gte", 5),)))
    finally:
        lexical.close()

    assert sorted(ids(hits)) == ["y1", "y2"]


def test_document_ids_with_a_prefix(index: LexicalIndex) -> None:
    assert index.doc_ids_with_prefix("handbook/", 10) == ["handbook/onboarding", "handbook/oncall"]
    assert index.doc_ids_with_prefix("nothing/", 10) == []
    assert index.doc_ids_with_prefix("handbook", 2) is None  # three match: more than the limit


def test_an_index_in_a_directory_lives_in_its_own_folder_removed_on_close(tmp_path: Path) -> None:
    first, second = LexicalIndex(tmp_path), LexicalIndex(tmp_path)
    first.apply(CORPUS)
    assert len(list(tmp_path.iterdir())) == 2
    assert ids(first.search("zyxquartz", 1)) == ["c6"]
    assert second.search("zyxquartz", 1) == []

    first.close()
    second.close()
    first.close()  # twice is fine
    assert list(tmp_path.iterdir()) == []


# --- the index as a view of the chunk log ------------------------------------------------------


async def create_chunk_topic(bootstrap_servers: str, partitions: int = 3) -> str:
    topic = f"lexical-{uuid.uuid4().hex[:8]}.chunks"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    return topic


async def produce(bootstrap_servers: str, topic: str, changes: list[tuple[str, bytes | None]]) -> None:
    async with AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all") as producer:
        for chunk_id, value in changes:
            await producer.send(topic, key=chunk_id.encode(), value=value)
        await producer.flush()


async def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    async with AIOKafkaProducer(bootstrap_servers=bootstrap_servers) as producer:
        partitions = await producer.partitions_for(topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


#: The log the view tests start from: the corpus, then an edit and a delete.
HISTORY = [
    *CORPUS,
    change("c2", "handbook/oncall", "A note on call rotations, rewritten: pager duty and handover."),
    ("c3", None),
]


async def eventually(check: Any, within: float) -> float:
    """Seconds until ``check()`` holds; fails after ``within`` seconds."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
async def chunk_topic(kafka_broker: Any) -> str:
    topic = await create_chunk_topic(kafka_broker.bootstrap_servers)
    await produce(kafka_broker.bootstrap_servers, topic, HISTORY)
    return topic


@pytest.fixture
async def view(kafka_broker: Any, chunk_topic: str) -> AsyncIterator[ChunkLogView]:
    index = LexicalIndex()
    async with ChunkLogView(index, KafkaConnection(kafka_broker.bootstrap_servers), chunk_topic) as follower:
        assert await follower.wait_caught_up(60)
        yield follower
    index.close()


@pytest.mark.integration
async def test_the_view_replays_the_log_to_its_end_before_it_says_caught_up(
    view: ChunkLogView, kafka_broker: Any, chunk_topic: str
) -> None:
    index = view.index
    assert index.num_chunks == len(CORPUS) - 1
    assert ids(index.search("rewritten handover", 10)) == ["c2"]
    assert "escalation" not in index.search("pager", 10)[0].text
    assert index.search("old", 10) == []  # c3 was deleted
    assert view.applied_offsets() == await end_offsets(kafka_broker.bootstrap_servers, chunk_topic)


@pytest.mark.integration
async def test_the_view_applies_a_new_change_within_a_fraction_of_a_second(
    view: ChunkLogView, kafka_broker: Any, chunk_topic: str
) -> None:
    index = view.index
    await produce(
        kafka_broker.bootstrap_servers, chunk_topic, [change("c9", "d/9", "a brand new qwertyuiop")]
    )
    added = await eventually(lambda: ids(index.search("qwertyuiop", 1)) == ["c9"], within=1.0)

    await produce(kafka_broker.bootstrap_servers, chunk_topic, [("c9", None)])
    deleted = await eventually(lambda: index.search("qwertyuiop", 1) == [], within=1.0)

    # Measured from the broker's acknowledgement; typically tens of milliseconds.
    assert added < 1.0 and deleted < 1.0


@pytest.mark.integration
async def test_waiting_for_offsets_returns_once_they_are_applied(
    view: ChunkLogView, kafka_broker: Any, chunk_topic: str
) -> None:
    await produce(kafka_broker.bootstrap_servers, chunk_topic, [change("c10", "d/10", "asdfghjkl")])
    offsets = await end_offsets(kafka_broker.bootstrap_servers, chunk_topic)

    assert await view.wait_for(offsets, timeout=5.0)
    assert view.has_applied(offsets)
    assert ids(view.index.search("asdfghjkl", 1)) == ["c10"]
    assert not await view.wait_for({0: offsets[0] + 1000}, timeout=0.2)


def thread_niceness() -> dict[int, tuple[str, int]]:
    """Every thread of this process: its name as the kernel knows it, and its nice value."""
    threads = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            threads[int(task.name)] = (name, os.getpriority(os.PRIO_PROCESS, int(task.name)))
        except OSError:  # ended meanwhile
            continue
    return threads


class ThreadRecordingIndex(LexicalIndex):
    """Notes the thread each ``apply`` runs on, and that thread's nice value."""

    def __init__(self) -> None:
        super().__init__()
        self.applied_on: set[tuple[int, int]] = set()

    def apply(self, changes: Any) -> int:
        thread = threading.get_native_id()
        self.applied_on.add((thread, os.getpriority(os.PRIO_PROCESS, thread)))
        return super().apply(changes)


@pytest.mark.integration
async def test_the_view_applies_changes_at_low_priority_and_searches_keep_theirs(
    kafka_broker: Any, chunk_topic: str
) -> None:
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    low = min(own + 7, 19)
    before = thread_niceness()
    index = ThreadRecordingIndex()
    try:
        async with ChunkLogView(
            index, KafkaConnection(kafka_broker.bootstrap_servers), chunk_topic, niceness=low
        ) as view:
            assert await view.wait_caught_up(60)
            await produce(kafka_broker.bootstrap_servers, chunk_topic, [change("c11", "d/11", "lowprio")])
            await eventually(lambda: ids(index.search("lowprio", 1)) == ["c11"], within=5.0)
            started = {tid: thread for tid, thread in thread_niceness().items() if tid not in before}
    finally:
        index.close()

    assert index.applied_on and all(nice == low for _, nice in index.applied_on)
    # tantivy's indexing, segment and merge threads start from the applying thread's priority.
    tantivy = [nice for name, nice in started.values() if name.startswith(("thrd-tantivy", "merge_thread"))]
    assert tantivy and all(nice == low for nice in tantivy)
    # The loop that serves searches is left as it was.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


@pytest.mark.integration
async def test_a_restarted_view_and_a_second_view_rebuild_the_same_index(
    view: ChunkLogView, kafka_broker: Any, chunk_topic: str
) -> None:
    def results(index: LexicalIndex) -> list[tuple[str, float]]:
        return [(hit.id, round(hit.score, 5)) for hit in index.search("note call rotations pager", 10)]

    expected = results(view.index)
    for _ in range(2):
        index = LexicalIndex()
        async with ChunkLogView(index, KafkaConnection(kafka_broker.bootstrap_servers), chunk_topic) as other:
            assert await other.wait_caught_up(60)
            assert results(index) == expected
        index.close()


@pytest.mark.integration
async def test_a_missing_topic_is_an_empty_log_and_is_not_created(kafka_broker: Any) -> None:
    topic = f"lexical-missing-{uuid.uuid4().hex[:8]}"
    index = LexicalIndex()
    async with ChunkLogView(
        index, KafkaConnection(kafka_broker.bootstrap_servers), topic, retry_backoff_s=0.2
    ) as follower:
        assert await follower.wait_caught_up(30)
        assert index.num_chunks == 0
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
        await admin.start()
        try:
            assert topic not in await admin.list_topics()
        finally:
            await admin.close()
    index.close()


@pytest.mark.integration
async def test_an_unreachable_broker_ends_the_wait_early_without_catching_up() -> None:
    index = LexicalIndex()
    async with ChunkLogView(index, KafkaConnection(f"127.0.0.1:{free_port()}"), "docs.chunks") as follower:
        started = time.monotonic()
        assert not await follower.wait_caught_up(60)
        assert time.monotonic() - started < 30
    index.close()


# --- the view inside the API: restarts and replicas --------------------------------------------


@pytest.mark.integration
async def test_api_replicas_and_a_restarted_api_return_the_same_lexical_results(
    module_settings: Callable[..., Settings], chunk_topic: str, embedder: Embedder, serve: Serve
) -> None:
    settings = module_settings("lexical", chunks_topic=chunk_topic)
    body = {"query": "note on call rotations", "k": 5, "mode": "lexical"}

    async def lexical_results() -> list[tuple[str, float]]:
        answers = []
        async with AsyncExitStack() as stack:
            # Two replicas side by side, each with its own index built from the log.
            for _ in range(2):
                client = await stack.enter_async_context(serve(create_app(settings, embedder=embedder)))
                response = await client.post("/v1/search", json=body)
                assert response.status_code == 200, response.text
                answers.append([(hit["id"], round(hit["score"], 5)) for hit in response.json()["hits"]])
        assert answers[0] == answers[1]
        return answers[0]

    first = await lexical_results()
    assert first[0][0] == "c2" and len(first) == 5
    # Restarted: new instances, nothing kept but the log.
    assert await lexical_results() == first
