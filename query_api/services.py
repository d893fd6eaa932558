"""What the routes need, opened once by the app's lifespan and found on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from query_api.chunk_log_view import ChunkLogView
from query_api.nearest import NearestChunks
from query_api.prometheus_metrics import PipelineMetrics
from query_api.query_embedding import QueryBatcher, TextEncoder
from query_api.rerank import Reranker
from query_api.stats import StatsTail
from query_api.vector_coverage import VectorCoverage
from schemas.settings import Settings
from streams.lag import LagReader
from streams.publisher import EventPublisher

if TYPE_CHECKING:
    from chromadb.api import AsyncClientAPI
    from chromadb.api.models.AsyncCollection import AsyncCollection


@dataclass(frozen=True)
class Services:
    settings: Settings
    chroma: AsyncClientAPI
    collection: AsyncCollection
    #: The query model (also used by the extractive generator); searches go through the batcher,
    #: which also searches this replica's vector index when it keeps one (``local_vectors``).
    embedder: TextEncoder
    query_batcher: QueryBatcher
    #: Vector search's nearest-neighbour queries (the collection's other calls use ``collection``).
    nearest: NearestChunks
    lag_reader: LagReader
    stats: StatsTail
    metrics: PipelineMetrics
    #: This replica's views of the chunk log, and how far they have applied it: the BM25 index
    #: (``.index``) and, with ``local_vectors``, the vector index (``.vectors``).
    chunk_log_view: ChunkLogView
    #: Which vector index answers a vector search: this replica's own, or Chroma's.
    vector_coverage: VectorCoverage
    reranker: Reranker | None = None
    #: Publishes the documents written through the API; None = this instance accepts no writes.
    publisher: EventPublisher | None = None
    #: The index generation these services answer from: its collection, chunk log and query
    #: model (``settings`` is that generation's). Every search is answered by one generation.
    generation: int = 0


async def get_services(request: Request) -> Services:
    """FastAPI dependency: the services of the app serving this request. ``async`` so that FastAPI
    calls it on the event loop, not on a worker thread (see ``auth.get_caller``)."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise RuntimeError("the app's lifespan has not run: its services are not open")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
