"""The Chroma collection, opened the same way by the consumers (which write it) and the API (which
reads it)."""

from __future__ import annotations

from chromadb.api import AsyncClientAPI
from chromadb.api.models.AsyncCollection import AsyncCollection

__all__ = ["HNSW_EF_SEARCH", "open_collection"]


#: HNSW search breadth. Chroma's default (100) left a live record unreachable by its own
#: embedding after 100k upserts and deletes over 1,000 ids (1 of 620, chromadb 1.5.9; the churn
#: test with ``pytest --long``); at 200 every record is found, first in all but at most ~1 in 600
#: (the graph is built on several threads, so it differs from run to run), for a few ms more per query.
HNSW_EF_SEARCH = 200


async def open_collection(client: AsyncClientAPI, name: str) -> AsyncCollection:
    """Get or create the collection the way every ragstream process expects it.

    ``embedding_function=None`` because we always supply vectors (Chroma's default would try to
    download a model); cosine space because the vectors are normalised sentence embeddings. A
    collection made before ``HNSW_EF_SEARCH`` was raised gets it too (search breadth can change).
    """
    collection = await client.get_or_create_collection(
        name,
        embedding_function=None,
        configuration={"hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH}},
    )
    hnsw = (collection.configuration or {}).get("hnsw") or {}
    if (hnsw.get("ef_search") or 0) < HNSW_EF_SEARCH:
        await collection.modify(configuration={"hnsw": {"ef_search": HNSW_EF_SEARCH}})
    return collection
