"""The FastAPI application: its lifespan opens every client the routes use, in one exit stack."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Info

from engines.chroma_client import open_chroma
from query_api.auth import ApiKeyMiddleware
from query_api.chunk_log_view import ChunkLogView
from query_api.generations import QueryModels, ReplicaGenerations, SharedServices, default_replica_id
from query_api.nearest import IndexUnreachable
from query_api.prometheus_metrics import PipelineMetrics
from query_api.query_embedding import TextEncoder
from query_api.replica_header import ReplicaHeaderMiddleware
from query_api.request_ids import RequestIdMiddleware
from query_api.rerank import Reranker, load_reranker
from query_api.routes import router
from query_api.services import Services
from query_api.startup_timeline import StartupTimeline
from query_api.stats import StatsTail
from schemas.settings import Settings
from streams.lag import LagReader
from streams.publisher import EventPublisher

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    embedder: TextEncoder | None = None,
    reranker: Reranker | None = None,
    *,
    replica: str | None = None,
) -> FastAPI:
    """Build the query API; ``embedder`` and ``reranker`` may be given (tests), else the lifespan
    loads the configured models. ``replica`` names this copy among several behind a load
    balancer: each response says it in ``X-Ragstream-Replica``."""
    if (
        settings.hybrid_fusion == "rrf"
        and settings.hybrid_vector_weight == settings.hybrid_lexical_weight == 0
    ):
        raise ValueError(
            "with hybrid_fusion 'rrf', hybrid_vector_weight and hybrid_lexical_weight cannot both be 0"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            timeline = StartupTimeline()
            chroma = await open_chroma(settings)
            lag_reader = LagReader(settings.kafka)
            stack.push_async_callback(lag_reader.stop)
            try:
                await lag_reader.start()
            except KafkaError as exc:
                # Search needs only Chroma; lag and readiness connect again when asked.
                log.warning("Kafka at %s unreachable at startup: %s", settings.bootstrap_servers, exc)
            publisher = EventPublisher(
                settings.kafka,
                settings.events_topic,
                max_event_bytes=settings.max_record_bytes,
            )
            stack.push_async_callback(publisher.stop)
            try:
                await publisher.start()
            except KafkaError as exc:
                # Writes try again to connect when they come.
                log.warning("no producer for writes, Kafka unreachable: %s", exc)
            stats = await stack.enter_async_context(StatsTail(settings.kafka, settings.stats_topic))
            timeline.mark("Kafka and Chroma clients")
            metrics = _with_replica_info(
                PipelineMetrics(stats, lag_reader, settings, replica=replica), replica
            )
            generations = ReplicaGenerations(
                settings, replica or default_replica_id(), QueryModels(settings, embedder)
            )
            stack.push_async_callback(generations.stop)
            # The active generation's views start replaying here, while the models load.
            await generations.start(SharedServices(chroma, lag_reader, stats, metrics, None, publisher))
            timeline.mark("generations and query model (views replaying meanwhile)")
            active_reranker = (
                reranker if reranker is not None else await asyncio.to_thread(load_reranker, settings)
            )
            timeline.mark("reranker")
            await _wait_for_lexical(
                generations.serving.services.chunk_log_view, settings.lexical_startup_timeout_s
            )
            timeline.mark("views caught up with the chunk log")

            def switch(services: Services) -> None:
                app.state.services = services

            app.state.generations = generations
            app.state.services = generations.serve(active_reranker, switch)
            stack.callback(delattr, app.state, "services")
            stack.callback(delattr, app.state, "generations")
            _freeze_startup_objects(stack)
            timeline.mark("garbage collection")
            log.info("serving: %s", timeline.summary())
            yield

    app = FastAPI(
        title="ragstream query API",
        summary="Search over the continuously updated document index",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.add_exception_handler(httpx.TransportError, _index_unreachable)
    app.add_exception_handler(IndexUnreachable, _index_unreachable)
    # On the path, not per router: every /v1 route, today's and any added later, needs a key.
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    if replica is not None:
        app.add_middleware(ReplicaHeaderMiddleware, replica=replica)
    # Added last, so it is the outermost: the key check's log lines carry the request id too.
    app.add_middleware(RequestIdMiddleware)
    return app


def _with_replica_info(metrics: PipelineMetrics, replica: str | None) -> PipelineMetrics:
    """``ragstream_api_replica_info{replica="…"} 1`` among the metrics of a replica behind a load
    balancer: a scrape through it reaches one replica, and this says which."""
    if replica is not None:
        Info(
            "ragstream_api_replica", "The API replica that served this scrape", registry=metrics.registry
        ).info({"replica": replica})
    return metrics


def _freeze_startup_objects(stack: AsyncExitStack) -> None:
    """Keep what start-up made (modules, models, the replay's leftovers) out of the cycle
    collector's scans. Left in, each full collection walked all of them holding the GIL, 200–650
    ms with 100k chunks indexed: under load one every few seconds, and every search stalled."""
    gc.collect()
    gc.freeze()
    stack.callback(gc.unfreeze)
    log.info("%d objects from start-up left out of garbage collection", gc.get_freeze_count())


# The limit goes to ChunkLogView.wait_caught_up, whose timeout is an answer: serve anyway.
async def _wait_for_lexical(view: ChunkLogView, timeout: float) -> None:  # noqa: ASYNC109
    # Serving before the replay ends would answer lexical queries from part of the log.
    started = time.monotonic()
    if await view.wait_caught_up(timeout):
        log.info("BM25 index ready after %.1f s", time.monotonic() - started)
    else:
        log.warning(
            "BM25 index has not replayed %s after %.1f s; lexical search answers 503 and hybrid "
            "search uses what it has until it has",
            view.topic,
            time.monotonic() - started,
        )


async def _index_unreachable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"the index is unreachable: {type(exc).__name__}: {exc}"}, status_code=503)
