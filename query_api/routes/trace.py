"""``GET /v1/trace/{doc_id}``: one document's path through every hop, for the status page and for
an operator asking why an edit is not searchable yet (``streams.trace`` does the reading)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException, Query

from query_api.auth import CallerDep
from query_api.services import ServicesDep
from query_api.tenancy import TenantScope
from streams.trace import VersionTrace, read_trace

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/trace/{doc_id:path}", responses={503: {"description": "Kafka is unreachable"}})
async def trace(
    doc_id: str,
    services: ServicesDep,
    caller: CallerDep,
    versions: Annotated[int, Query(ge=1, le=50)] = 3,
) -> dict[str, Any]:
    """The document's last versions through docs.events, the changes stage, the consumers, the
    chunk log, Chroma and this replica's search views, with times, and where the newest waits."""
    scope = TenantScope(caller.tenant)

    async def visible(version: VersionTrace, chunk_records: list[tuple[int, int]]) -> tuple[bool | None, str]:
        # Searchable here once this replica's views have applied every chunk record of the version.
        positions: dict[int, int] = {}
        for partition, offset in chunk_records:
            positions[partition] = max(positions.get(partition, 0), offset + 1)
        if services.chunk_log_view.has_applied(positions):
            return True, "this replica's search views have applied its chunk records"
        behind = {p: services.chunk_log_view.applied_offsets().get(p, 0) for p in positions}
        return (
            False,
            f"in Chroma, not yet in this replica's search views (applied {behind}, needs {positions})",
        )

    try:
        found = await read_trace(
            services.settings,
            scope.stored_id(doc_id),
            services.collection,
            versions=versions,
            visible=visible,
        )
    except KafkaError as exc:
        raise HTTPException(status_code=503, detail=f"Kafka is unreachable: {exc}") from exc
    body = dataclasses.asdict(found)
    body["doc_id"] = doc_id
    return body
