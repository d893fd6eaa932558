"""Chroma under churn: after many upserts and deletes over a small id space, every live record
must still be found first by its own embedding (users report records becoming unreachable)."""

from __future__ import annotations

import chromadb
import numpy as np
import pytest
from scale import scaled, scaled_timeout

from engines.chroma import HNSW_EF_SEARCH, open_collection

pytestmark = [pytest.mark.integration, scaled_timeout()]

# `pytest --long` runs the full 100k-operation version.
OPERATIONS = scaled(20_000, 100_000)
ID_SPACE, DIMENSION, BATCH = 1_000, 384, 500


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def test_every_live_record_is_found_by_its_own_embedding_after_churn(chroma_server):
    client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=chroma_server.port)
    collection = await open_collection(client, f"churn-{OPERATIONS}")
    rng = np.random.default_rng(11)
    live: dict[str, np.ndarray] = {}

    for _ in range(OPERATIONS // BATCH):
        ids = [f"chunk-{i}" for i in rng.choice(ID_SPACE, size=BATCH, replace=False)]
        deleting = rng.random(BATCH) < 0.4
        upserts = [chunk_id for chunk_id, gone in zip(ids, deleting, strict=True) if not gone]
        deletes = [chunk_id for chunk_id, gone in zip(ids, deleting, strict=True) if gone]
        vectors = unit_vectors(rng, len(upserts))
        await collection.upsert(ids=upserts, embeddings=vectors, documents=upserts)
        await collection.delete(ids=deletes)
        live.update(zip(upserts, vectors, strict=True))
        for chunk_id in deletes:
            live.pop(chunk_id, None)

    assert await collection.count() == len(live)
    ids = sorted(live)
    unreachable, not_first = [], []
    for start in range(0, len(ids), 200):
        part = ids[start : start + 200]
        found = await collection.query(
            query_embeddings=np.stack([live[i] for i in part]), n_results=10, include=[]
        )
        for want, got in zip(part, found["ids"], strict=True):
            if want not in got:
                unreachable.append(want)
            elif got[0] != want:
                not_first.append(want)
    # What users reported: a live record that its own embedding cannot find at all. A miss in the
    # top 10 can also be HNSW's approximation (random 384-dimensional vectors are its worst case;
    # CI saw 1 in 593 under load); asked for every record, the search looks at the whole graph, so
    # a record still missing then is one the index lost.
    if unreachable:
        found = await collection.query(
            query_embeddings=np.stack([live[i] for i in unreachable]), n_results=len(ids), include=[]
        )
        lost = [want for want, got in zip(unreachable, found["ids"], strict=True) if want not in got]
        assert not lost, f"{len(lost)} of {len(ids)} live records not found at all: {lost[:5]}"
        assert len(unreachable) <= len(ids) // 500, f"{len(unreachable)} of {len(ids)} not in the top 10"
    # HNSW is approximate and Chroma builds its graph on several threads, so the graph differs from
    # run to run: under load, 0 or 1 record in ~600 came second to a neighbour at this breadth.
    assert len(not_first) <= len(ids) // 500, (
        f"{len(not_first)} of {len(ids)} live records not found first: {not_first[:5]}"
    )


async def test_every_collection_searches_wide_enough_even_one_made_before(chroma_server):
    client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=chroma_server.port)
    old = await client.create_collection(
        "made-with-chroma-defaults", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
    )
    assert old.configuration["hnsw"]["ef_search"] < HNSW_EF_SEARCH

    await open_collection(client, old.name)
    new = await open_collection(client, "made-by-ragstream")

    assert (await client.get_collection(old.name)).configuration["hnsw"]["ef_search"] == HNSW_EF_SEARCH
    assert new.configuration["hnsw"]["ef_search"] == HNSW_EF_SEARCH
    assert new.configuration["hnsw"]["space"] == "cosine"
