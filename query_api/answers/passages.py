"""The passages an answer is grounded on: what retrieval finds for the question."""

from __future__ import annotations

from query_api.answers.prompt import Passage
from query_api.models import SearchHit, SearchRequest
from query_api.retrieval import search
from query_api.services import Services
from query_api.tenancy import UNRESTRICTED, TenantScope


async def retrieve_passages(
    services: Services, question: str, k: int, scope: TenantScope = UNRESTRICTED
) -> list[Passage]:
    """The ``k`` best chunks for ``question`` that ``scope`` may see, numbered from 1 in rank order."""
    # The one place answers choose how to retrieve.
    response = await search(services, SearchRequest(query=question, k=k, mode="vector"), scope)
    return [to_passage(n, hit) for n, hit in enumerate(response.hits, start=1)]


def to_passage(n: int, hit: SearchHit) -> Passage:
    chunk_index = hit.metadata.get("chunk_index")
    return Passage(
        n=n,
        chunk_id=hit.id,
        doc_id=hit.doc_id,
        text=hit.text,
        score=hit.score,
        chunk_index=chunk_index if isinstance(chunk_index, int) else None,
    )
