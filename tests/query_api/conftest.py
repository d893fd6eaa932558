"""Fixtures for the query API tests: the embedding model, settings of a module's own, chunks
written as the consumers write them, and the app served in process or over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import chromadb
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from consumers.chunk_log import publish_chunk_changes
from consumers.sink import ChunkChanges
from deploy import ChromaServer, KafkaBroker, free_port
from engines.embedder import Embedder
from schemas.settings import Settings


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """all-MiniLM-L6-v2 from its installed package; loading takes a few seconds."""
    return Embedder()


@pytest.fixture(scope="session")
def module_settings(kafka_broker: KafkaBroker, chroma_server: ChromaServer) -> Callable[..., Settings]:
    """A factory: ``module_settings(prefix, **overrides)`` gives settings on the session's broker and
    Chroma whose collection, topics and consumer groups are ``prefix`` and a random suffix, so that
    no two modules (or two calls) share any; two partitions unless overridden."""

    def make(prefix: str, **overrides: Any) -> Settings:
        base = Settings(
            bootstrap_servers=kafka_broker.bootstrap_servers, chroma_port=chroma_server.port, partitions=2
        )
        named = base.namespaced(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return Settings.model_validate(named.model_dump() | overrides)

    return make


@pytest.fixture(scope="session")
def index_chunks(embedder: Embedder) -> Callable[..., Awaitable[None]]:
    """A writer: ``await index_chunks(settings, ids, texts, metadatas)`` puts the chunks into the
    settings' Chroma collection with real embeddings and then onto its chunk log, the way the
    consumers write both; ``chunk_log=False`` writes Chroma only, ``vectors_in_log=False`` logs the
    chunks without their vectors (as an older version did), ``encoder`` embeds with another model."""

    async def write(
        settings: Settings,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
        *,
        chunk_log: bool = True,
        vectors_in_log: bool = True,
        encoder: Embedder | None = None,
    ) -> None:
        client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
        collection = await client.get_or_create_collection(
            settings.collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )
        vectors = (encoder or embedder).encode(texts)
        await collection.add(
            ids=ids,
            documents=texts,
            embeddings=vectors,
            metadatas=metadatas,  # type: ignore[arg-type]
        )
        if not chunk_log:
            return
        changes = ChunkChanges(
            new_ids=ids,
            new_texts=texts,
            new_metadatas=metadatas,  # type: ignore[arg-type]
            new_embeddings=vectors if vectors_in_log else None,
        )
        async with AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all") as producer:
            await publish_chunk_changes(producer, settings.chunks_topic, changes)

    return write


@asynccontextmanager
async def _serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://query-api") as client:
            yield client


@asynccontextmanager
async def _serve_http(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError(f"uvicorn did not start on port {port}")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
def serve() -> Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]:
    """``async with serve(app) as client``: a client for ``app``, in process, with the app's
    lifespan run around it."""
    return _serve


@pytest.fixture(scope="session")
def serve_http() -> Callable[[Any], AbstractAsyncContextManager[str]]:
    """``async with serve_http(app) as url``: ``app`` served by uvicorn over real HTTP on a free
    port, in this event loop, so that streamed responses arrive as they are sent."""
    return _serve_http
