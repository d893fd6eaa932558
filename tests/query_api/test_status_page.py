"""The status page on ``GET /``, driven in headless Chromium against the app served over real HTTP."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import ray
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.async_api import BrowserContext, Error, Page, async_playwright, expect
from stage_process import StageProcess
from unavailable import skip_or_fail

from consumers.actors import ConsumerGroup
from consumers.controller import ScalingReport
from engines.embedder import Embedder
from query_api import create_app
from query_api.routes.status_page import router
from schemas import DocumentEvent, EventOp
from schemas.api_keys import ApiKeyEntry
from schemas.settings import Settings
from streams.publisher import EventPublisher
from streams.topics import ensure_topics

IndexChunks = Callable[..., Awaitable[None]]
ServeHttp = Callable[[Any], AbstractAsyncContextManager[str]]

CHROMIUM = Path("/usr/bin/chromium")

#: Without these a headless Chromium keeps trying to reach Google's services, which a closed
#: network turns into retries and noise; a sandbox needs privileges a root CI run does not have.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Containers often give /dev/shm 64 MB, too little for a renderer.
    "--disable-dev-shm-usage",
]

#: Each chunk's doc_id, text and how many seconds before the test it was indexed: each a minute
#: or more from where its age would read differently, for the app's start-up in between.
CORPUS = [
    ("guides/kafka", "Kafka consumer groups share the partitions of a topic and commit offsets.", 2400),
    ("recipes/sourdough", "Bake the sourdough loaf in a hot Dutch oven for forty minutes.", 300),
    ("science/photosynthesis", "Plants turn sunlight, water and carbon dioxide into sugar.", 7200),
]

API_KEY = "rsk_status-page-test"

#: The hops of a searchable version, in the order the trace lists them, and how the page names them.
EVERY_HOP = {
    "published": "published to the events topic",
    "changes": "changes stage → changes topic",
    "consumer batch": "consumer batch (chunked, embedded)",
    "chunks": "chunk log",
    "chroma": "Chroma",
    "searchable": "visible to search",
}


# --- the page's file -----------------------------------------------------------------------------


def test_the_page_is_served_as_html_by_itself() -> None:
    app = FastAPI()
    app.include_router(router)

    response = TestClient(app).get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="query"' in response.text
    assert 'id="trace-doc"' in response.text


# --- the page in a browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_settings(module_settings: Callable[..., Settings]) -> Settings:
    # Events cross two hops to the index: the changes stage, then the indexers.
    return module_settings("page", consumer_input="changes")


@pytest.fixture(scope="module")
async def indexed(page_settings: Settings, index_chunks: IndexChunks) -> None:
    """The corpus in Chroma and in the chunk log, the way the consumers write both."""
    await ensure_topics(page_settings)
    now = time.time()
    texts = [text for _, text, _ in CORPUS]
    metadatas: list[dict[str, Any]] = [
        {
            "doc_id": doc_id,
            "version": 1,
            "chunk_index": 0,
            "chunk_count": 1,
            "source": "tests",
            "content_type": "text/plain",
            "indexed_at": now - seconds_ago,
        }
        for doc_id, _, seconds_ago in CORPUS
    ]
    ids = [uuid.uuid4().hex for _ in CORPUS]
    await index_chunks(page_settings, ids, texts, metadatas)


@pytest.fixture(scope="module")
async def base_url(
    page_settings: Settings, embedder: Embedder, indexed: None, serve_http: ServeHttp
) -> AsyncIterator[str]:
    async with serve_http(create_app(page_settings, embedder=embedder)) as url:
        yield url


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserContext]:
    """Debian's Chromium, headless, with a new empty profile; Playwright only drives it."""
    if not CHROMIUM.exists():  # noqa: ASYNC240 (once per session, before the browser starts)
        reason = f"{CHROMIUM} is missing: apt-get install chromium (make test installs it as root)"
        skip_or_fail(reason)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        yield context
        await context.close()


@asynccontextmanager
async def _opened(browser: BrowserContext, url: str) -> AsyncIterator[Page]:
    """The page at ``url`` in a new tab; its script must not fail."""
    page = await browser.new_page()
    errors: list[Error] = []
    page.on("pageerror", lambda error: errors.append(error))
    await page.goto(url)
    try:
        yield page
    finally:
        # The profile outlives the page: a key saved by one test must not reach the next.
        await page.evaluate("localStorage.clear()")
        await page.close()
    assert errors == [], "the page's script failed"


@pytest.fixture
async def page(browser: BrowserContext, base_url: str) -> AsyncIterator[Page]:
    async with _opened(browser, base_url) as page:
        yield page


@pytest.mark.integration
async def test_typing_a_query_lists_the_matching_document_first_with_score_and_age(page: Page) -> None:
    await page.locator("#query").press_sequentially("how long does the bread bake in the oven?")
    await page.locator("#query").press("Enter")

    hits = page.locator("#results li")
    await expect(hits).to_have_count(len(CORPUS))
    first = hits.first
    await expect(first.locator(".doc")).to_have_text("recipes/sourdough")
    await expect(first.locator(".text")).to_contain_text("Dutch oven")
    assert float(await first.locator(".score").inner_text()) > 0
    docs = await hits.locator(".doc").all_inner_texts()
    ages = await hits.locator(".age").all_inner_texts()
    assert dict(zip(docs, ages, strict=True)) == {
        "recipes/sourdough": "5 min ago",
        "guides/kafka": "40 min ago",
        "science/photosynthesis": "2 h ago",
    }


@pytest.mark.integration
async def test_live_panel_shows_lag_and_freshness_and_updates_events_per_second(
    browser: BrowserContext, base_url: str, page_settings: Settings
) -> None:
    # Four events wait for the changes stage; two changes wait for the indexers, which have
    # committed the first of them.
    async with AIOKafkaProducer(bootstrap_servers=page_settings.bootstrap_servers) as producer:
        for partition in (0, 0, 0, 1):
            await producer.send_and_wait(page_settings.events_topic, b"{}", partition=partition)
        for doc_id in (b"a", b"b"):
            # The changes topic is compacted: every record needs a key.
            await producer.send_and_wait(page_settings.changes_topic, b"{}", key=doc_id, partition=1)
        await _report_stats(producer, page_settings, events_consumed=100)
        # The group's controller: the lag calls for 2 actors, 1 answers.
        report = ScalingReport(
            page_settings.consumer_group, 2, 1, 2, "lag 900 calls for 2 actors", time.time()
        )
        await producer.send_and_wait(page_settings.stats_topic, report.to_json(), key=report.key)
    changes = TopicPartition(page_settings.changes_topic, 1)
    committer = AIOKafkaConsumer(
        bootstrap_servers=page_settings.bootstrap_servers,
        group_id=page_settings.consumer_group,
        enable_auto_commit=False,
    )
    committer.assign([changes])
    async with committer:
        await committer.commit({changes: 1})
    # Opened once every record is written and committed: a reading taken in between (a lag of 6
    # before the commit) would stay the charts' highest.
    async with _opened(browser, base_url) as page:
        await expect(page.locator("#lag")).to_have_text("5", timeout=15_000)
        await expect(page.locator("#hops")).to_have_text("changes stage 4 · indexer 1")
        await expect(page.locator("#partitions")).to_have_text("0: 0 · 1: 1")
        await expect(page.locator("#oldest-unindexed")).to_have_text(re.compile(r"^\d+ s$"))
        # The stats topic is tailed in the background; the page shows what it has read so far.
        await expect(page.locator("#events-consumed")).to_have_text("100", timeout=30_000)
        await expect(page.locator("#last-indexed")).to_have_text(re.compile(r"^\d+ s ago$"))
        await expect(page.locator("#consumer-actors")).to_have_text("1 / 2")

        async with AIOKafkaProducer(bootstrap_servers=page_settings.bootstrap_servers) as producer:
            await _report_stats(producer, page_settings, events_consumed=300)

        await expect(page.locator("#events-consumed")).to_have_text("300", timeout=30_000)
        await page.wait_for_function(
            "() => parseFloat(document.getElementById('events-per-s').textContent) > 0", timeout=15_000
        )
        await expect(page.locator("#note")).to_have_text(re.compile(r"^updated "))
        # The charts of the last 15 minutes have drawn a curve from the readings so far.
        for chart in ("#chart-lag", "#chart-rate", "#chart-age"):
            await expect(page.locator(f"{chart} polyline")).to_have_attribute(
                "points", re.compile(r"^[\d.]+,[\d.]+ ")
            )
        await expect(page.locator("#chart-lag-max")).to_have_text("max 5")


@pytest.fixture(scope="module")
async def keyed_url(
    page_settings: Settings, embedder: Embedder, indexed: None, serve_http: ServeHttp
) -> AsyncIterator[str]:
    """The same API, on the same index, with ``API_KEY`` required on every ``/v1`` route."""
    settings = page_settings.model_copy(update={"api_keys": (ApiKeyEntry.for_key(API_KEY),)})
    async with serve_http(create_app(settings, embedder=embedder)) as url:
        yield url


@pytest.mark.integration
async def test_with_api_keys_the_page_opens_asks_for_a_key_and_sends_the_one_pasted(
    browser: BrowserContext, keyed_url: str
) -> None:
    async with _opened(browser, keyed_url) as page:
        await expect(page.locator("#note")).to_have_text("this API needs a key (below)")
        await expect(page.locator("#key-box")).to_have_attribute("open", "")

        await page.locator("#api-key").fill(API_KEY)
        await page.locator("#save-key").click()
        await expect(page.locator("#note")).to_have_text(re.compile(r"^updated "))
        async with page.expect_request("**/v1/search") as searched:
            await page.locator("#query").fill("sourdough")
            await page.locator("#query").press("Enter")
        await expect(page.locator("#results .doc").first).to_have_text("recipes/sourdough")
        assert await (await searched.value).header_value("authorization") == f"Bearer {API_KEY}"
        # Kept in the browser across visits.
        await page.reload()
        await expect(page.locator("#api-key")).to_have_value(API_KEY)


async def _report_stats(producer: AIOKafkaProducer, settings: Settings, *, events_consumed: int) -> None:
    """What a consumer publishes after a batch: its cumulative counters."""
    stats = {"consumer_id": "a", "events_consumed": events_consumed, "updated_at": time.time() - 5}
    await producer.send_and_wait(settings.stats_topic, orjson.dumps(stats), key=b"a")


# --- tracing a document from the page ------------------------------------------------------------


def _start_consumers(group: ConsumerGroup) -> None:
    group.start()
    group.wait_ready()


@pytest.fixture(scope="module")
async def running_pipeline(
    module_settings: Callable[..., Settings],
    embedder: Embedder,
    serve_http: ServeHttp,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, str]]:
    """A pipeline of the module's own as it runs: the changes stage in its own process, a consumer
    actor in Ray, and the API over HTTP; its settings and the API's address."""
    state = tmp_path_factory.mktemp("trace-pipeline")
    settings = module_settings("trace-page", consumer_input="changes", state_dir=state)
    await ensure_topics(settings)
    stage = StageProcess(settings, state / "stage.log")
    stage.start()
    ray_was_up = ray.is_initialized()
    group = ConsumerGroup(settings, count=1)
    try:
        await asyncio.to_thread(_start_consumers, group)
        async with serve_http(create_app(settings, embedder=embedder)) as url:
            yield settings, url
    finally:
        await asyncio.to_thread(group.stop)
        if not ray_was_up:
            ray.shutdown()
        await asyncio.to_thread(stage.stop)


async def _trace_from_page(page: Page, doc_id: str) -> None:
    await page.locator("#trace-doc").fill(doc_id)
    await page.locator("#trace-doc").press("Enter")


@pytest.mark.integration
async def test_tracing_a_published_document_shows_every_hop_with_its_time_until_it_is_searchable(
    browser: BrowserContext, running_pipeline: tuple[Settings, str]
) -> None:
    settings, url = running_pipeline
    doc_id = f"handbook/{uuid.uuid4().hex[:8]}"
    event = DocumentEvent(
        doc_id=doc_id, op=EventOp.UPSERT, content="New starters walk through the office first. " * 20
    )
    before = time.time()
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        (receipt,) = await publisher.publish_many([event])
    after = time.time()

    async with _opened(browser, url) as page:
        await _trace_from_page(page, doc_id)

        # Traced at once, the version may still wait at a hop: the page reads it again until then.
        newest = page.locator("#trace-versions .version").first
        await expect(newest.locator(".state")).to_have_text("visible to search", timeout=180_000)
        await expect(newest.locator(".version-head .meta")).to_have_text(f"version {event.version} · upsert")
        await expect(page.locator("#trace-summary")).to_have_text(
            re.compile(rf"^“{re.escape(doc_id)}”: 1 version, newest first · read [^,]+$")
        )
        rows = newest.locator("tbody tr")
        assert await rows.evaluate_all("rows => rows.map((row) => row.dataset.hop)") == list(EVERY_HOP)
        assert await rows.locator(".hop").all_inner_texts() == list(EVERY_HOP.values())
        # Published, passed the stage, batched and logged have times; Chroma and search do not.
        ats = await rows.locator(".at").all_inner_texts()
        assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", at) for at in ats[:4]), ats
        assert ats[4:] == ["—", "—"]
        published = datetime.fromisoformat(await rows.first.locator(".at").get_attribute("title") or "")
        assert before - 1 <= published.timestamp() <= after + 1
        since = [
            float(text.removeprefix("+").removesuffix(" s"))
            for text in await rows.locator(".since").all_inner_texts()
            if text
        ]
        assert len(since) == 4 and since[0] == 0 and since == sorted(since)
        details = await rows.locator(".detail").all_inner_texts()
        assert details[0] == f"{settings.events_topic}[{receipt.partition}]@{receipt.offset}"
        assert details[-1] == "this replica's search views have applied its chunk records"


@pytest.mark.integration
async def test_a_document_that_no_stage_has_read_shows_it_waits_at_the_changes_stage_and_why(
    browser: BrowserContext,
    module_settings: Callable[..., Settings],
    embedder: Embedder,
    serve_http: ServeHttp,
) -> None:
    # Topics and groups of its own, read by no stage and no consumer.
    settings = module_settings("trace-idle", consumer_input="changes")
    await ensure_topics(settings)
    doc_id = "handbook/waiting"
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        (receipt,) = await publisher.publish_many(
            [DocumentEvent(doc_id=doc_id, op=EventOp.UPSERT, content="Nothing reads this yet.")]
        )

    async with serve_http(create_app(settings, embedder=embedder)) as url, _opened(browser, url) as page:
        await _trace_from_page(page, doc_id)

        newest = page.locator("#trace-versions .version").first
        await expect(newest.locator(".state")).to_have_text("waiting at the changes stage", timeout=30_000)
        rows = newest.locator("tbody tr")
        assert await rows.evaluate_all("rows => rows.map((row) => [row.dataset.hop, row.className])") == [
            ["published", "passed"],
            ["changes", "waiting"],
            ["consumer batch", "ahead"],
            ["chunks", "ahead"],
            ["chroma", "ahead"],
            ["searchable", "ahead"],
        ]
        waiting = newest.locator("tr.waiting")
        await expect(waiting.locator(".detail")).to_have_text(
            f"waits for the changes stage: group {settings.streams_app_id!r} has never committed on "
            f"{settings.events_topic}[{receipt.partition}], and this record is at offset {receipt.offset}"
        )
        await expect(waiting.locator(".since")).to_have_text(re.compile(r"^for \d+ s$"))
        await expect(page.locator("#trace-summary")).to_contain_text("again every 2 s while it waits")


@pytest.mark.integration
async def test_tracing_an_unknown_doc_id_says_that_no_event_of_it_was_found(page: Page) -> None:
    await _trace_from_page(page, "nobody/never-published")

    await expect(page.locator("#trace-summary")).to_have_text(
        "No event for “nobody/never-published” in the events topic: it was never published under "
        "this id, or its events are older than the topic keeps."
    )
    await expect(page.locator("#trace-versions .version")).to_have_count(0)


@pytest.mark.integration
async def test_with_api_keys_tracing_asks_for_a_key_and_then_sends_the_one_pasted(
    browser: BrowserContext, keyed_url: str
) -> None:
    async with _opened(browser, keyed_url) as page:
        await _trace_from_page(page, "recipes/sourdough")
        await expect(page.locator("#trace-summary")).to_have_text(
            "could not trace “recipes/sourdough”: this API needs a key (below)"
        )
        await expect(page.locator("#key-box")).to_have_attribute("open", "")

        await page.locator("#api-key").fill(API_KEY)
        await page.locator("#save-key").click()
        async with page.expect_request("**/v1/trace/**") as traced:
            await _trace_from_page(page, "recipes/sourdough")
        # Indexed straight into Chroma by the fixture, never published: no event of it to trace.
        await expect(page.locator("#trace-summary")).to_have_text(
            re.compile(r"^No event for “recipes/sourdough”")
        )
        assert await (await traced.value).header_value("authorization") == f"Bearer {API_KEY}"
