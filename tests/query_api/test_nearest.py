"""Nearest-neighbour queries straight to the Chroma server, batched across concurrent searches."""

from __future__ import annotations

import asyncio
import uuid

import chromadb
import numpy as np
import pytest

from deploy import ChromaServer, free_port
from engines.chroma import open_collection
from query_api.nearest import IndexUnreachable, NearestChunks

pytestmark = pytest.mark.integration


def _vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def test_concurrent_queries_get_what_chromas_own_client_gets(chroma_server: ChromaServer) -> None:
    client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=chroma_server.port)
    collection = await open_collection(client, f"nearest-{uuid.uuid4().hex[:8]}")
    stored = _vectors(300, seed=1)
    await collection.add(
        ids=[f"c{i}" for i in range(300)],
        embeddings=stored,
        metadatas=[{"doc_id": f"d{i % 7}", "parity": i % 2} for i in range(300)],
    )
    queries = _vectors(24, seed=2)
    wheres = [None, {"parity": 1}, {"doc_id": {"$in": ["d1", "d2"]}}]

    async with NearestChunks("127.0.0.1", chroma_server.port, str(collection.id), max_batch=5) as nearest:
        found = await asyncio.gather(
            *(
                nearest.nearest(query, 8, wheres[i % 3], with_metadatas=i % 2 == 0)
                for i, query in enumerate(queries)
            )
        )

    for i, (query, got) in enumerate(zip(queries, found, strict=True)):
        expected = await collection.query(
            query_embeddings=query[None], n_results=8, where=wheres[i % 3], include=["distances", "metadatas"]
        )
        assert got.ids == expected["ids"][0]
        assert got.distances == pytest.approx(expected["distances"][0], abs=1e-5)  # type: ignore[index]
        if i % 2 == 0:
            assert got.metadatas == expected["metadatas"][0]  # type: ignore[index]
        else:
            assert got.metadatas is None


async def test_a_stopped_server_is_reported_as_unreachable(tmp_path) -> None:
    server = ChromaServer(tmp_path, free_port())
    await asyncio.to_thread(server.start)
    try:
        client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=server.port)
        collection = await open_collection(client, "gone")
        await collection.add(ids=["a"], embeddings=_vectors(1, seed=3))
        async with NearestChunks("127.0.0.1", server.port, str(collection.id)) as nearest:
            assert (await nearest.nearest(_vectors(1, seed=3)[0], 1, None)).ids == ["a"]
            await asyncio.to_thread(server.kill)
            with pytest.raises(IndexUnreachable):
                await nearest.nearest(_vectors(1, seed=4)[0], 1, None)
    finally:
        await asyncio.to_thread(server.stop)
