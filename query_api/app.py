"""The FastAPI application: its lifespan opens every client the routes use, in one exit stack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import chromadb
import httpx
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from consumers.embedder import Embedder
from consumers.sink import open_collection
from query_api.metrics import PipelineMetrics
from query_api.routes import router
from query_api.services import Services
from query_api.stats import StatsTail
from schemas.settings import Settings
from streams.lag import LagReader

log = logging.getLogger(__name__)


def create_app(settings: Settings, embedder: Embedder | None = None) -> FastAPI:
    """Build the query API; ``embedder`` may be shared (tests), else the lifespan loads the model."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # The default client settings on purpose: chromadb allows one settings object per
            # server address in a process, and the sink in the consumers uses the default.
            chroma = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
            collection = await open_collection(chroma, settings.collection)
            model = (
                embedder
                if embedder is not None
                else await asyncio.to_thread(
                    Embedder,
                    settings.model,
                    settings.precision,
                    settings.embed_batch_size,
                    settings.torch_threads,
                )
            )

            lag_reader = LagReader(settings.bootstrap_servers)
            stack.push_async_callback(lag_reader.stop)
            try:
                await lag_reader.start()
            except KafkaError as exc:
                # Search needs only Chroma; lag and readiness connect again when asked.
                log.warning("Kafka at %s unreachable at startup: %s", settings.bootstrap_servers, exc)
            stats = await stack.enter_async_context(
                StatsTail(settings.bootstrap_servers, settings.stats_topic)
            )

            app.state.services = Services(
                settings=settings,
                chroma=chroma,
                collection=collection,
                embedder=model,
                lag_reader=lag_reader,
                stats=stats,
                metrics=PipelineMetrics(stats, lag_reader, settings.events_topic, settings.consumer_group),
            )
            stack.callback(delattr, app.state, "services")
            yield

    app = FastAPI(
        title="ragstream query API",
        summary="Search over the continuously updated document index",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.add_exception_handler(httpx.TransportError, _index_unreachable)
    return app


async def _index_unreachable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"the index is unreachable: {type(exc).__name__}: {exc}"}, status_code=503)
