"""``/v1/documents/{doc_id}``: what the index holds of a document (``GET``), and writes that
publish document events (``PUT``, ``DELETE``).

A write is accepted (202) once Kafka acknowledged it; the receipt's token, passed to a search as
``consistent_with``, makes that search wait until the index includes the write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from query_api.auth import CallerDep
from query_api.consistency import ConsistencyToken
from query_api.models import DocumentInfo, DocumentWrite, WriteReceipt
from query_api.services import Services, ServicesDep
from query_api.tenancy import UNRESTRICTED, TenantScope
from schemas import DocumentEvent, EventOp

if TYPE_CHECKING:
    from chromadb.api.models.AsyncCollection import AsyncCollection

__all__ = ["router"]

#: Room for the JSON around the document (field names, metadata, escapes) in a PUT body.
ENVELOPE_BYTES = 64 * 1024

router = APIRouter()


@router.get("/v1/documents/{doc_id:path}", responses={404: {"description": "No chunk of the document"}})
async def get_document(doc_id: str, services: ServicesDep, caller: CallerDep) -> DocumentInfo:
    """The indexed version of one document."""
    info = await _document_info(services.collection, doc_id, TenantScope(caller.tenant))
    if info is None:
        raise HTTPException(status_code=404, detail=f"document {doc_id!r} is not in the index")
    return info


_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"description": "The document is larger than RAGSTREAM_MAX_DOCUMENT_BYTES"},
    422: {"description": "The document id or body is invalid"},
    503: {"description": "Kafka is unreachable; the write was not accepted"},
}


@router.put(
    "/v1/documents/{doc_id:path}",
    status_code=202,
    responses=_WRITE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DocumentWrite.model_json_schema()}},
        }
    },
)
async def put_document(
    doc_id: str, request: Request, services: ServicesDep, caller: CallerDep
) -> WriteReceipt:
    """Create or replace a document; answered once Kafka has the event, before it is indexed.

    With a tenant's key the document is that tenant's: no field of the body can say otherwise."""
    limit = services.settings.max_document_bytes
    raw = await _read_body(request, limit + ENVELOPE_BYTES, limit)
    try:
        write = DocumentWrite.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc, "body") from None
    size = len(write.content.encode("utf-8"))
    if size > limit:
        raise _too_large(size, limit)
    fields = write.model_dump(exclude_none=True)
    return await _publish(services, _event(doc_id, caller.tenant, op=EventOp.UPSERT, **fields))


@router.delete("/v1/documents/{doc_id:path}", status_code=202, responses=_WRITE_RESPONSES)
async def delete_document(
    doc_id: str,
    services: ServicesDep,
    caller: CallerDep,
    version: Annotated[int | None, Query(ge=0, description="the time in µs when unset")] = None,
) -> WriteReceipt:
    """Remove a document; answered once Kafka has the event, before it is indexed. With a
    tenant's key, only that tenant's document of this id."""
    fields = {} if version is None else {"version": version}
    return await _publish(services, _event(doc_id, caller.tenant, op=EventOp.DELETE, **fields))


async def _document_info(
    collection: AsyncCollection, doc_id: str, scope: TenantScope = UNRESTRICTED
) -> DocumentInfo | None:
    """Version, chunk count and indexing time of ``doc_id`` as ``scope`` names and sees it; None
    when it has no chunks there."""
    where: Any = {"doc_id": scope.stored_id(doc_id)}
    if scope.tenant is not None:
        where = {"$and": [where, {"tenant": scope.tenant}]}
    result = await collection.get(where=where, include=["metadatas"])
    metadatas: list[Any] = list(result["metadatas"] or [])
    if not metadatas:
        return None
    version = max(int(meta.get("version", 0)) for meta in metadatas)
    latest = [meta for meta in metadatas if int(meta.get("version", 0)) == version]
    # While an update is being applied the old version's chunks are still there, so count what the
    # newest version declares rather than every chunk stored.
    declared = latest[0].get("chunk_count")
    chunk_count = int(declared) if isinstance(declared, int) else len(latest)
    indexed_at = max(float(meta.get("indexed_at", 0.0)) for meta in metadatas)
    return DocumentInfo(doc_id=doc_id, version=version, chunk_count=chunk_count, indexed_at=indexed_at)


def _event(doc_id: str, tenant: str | None, **fields: Any) -> DocumentEvent:
    try:
        return DocumentEvent(doc_id=TenantScope(tenant).stored_id(doc_id), tenant=tenant, **fields)
    except ValidationError as exc:
        raise _invalid(exc, "body", path_fields=frozenset({"doc_id"})) from None


async def _publish(services: Services, event: DocumentEvent) -> WriteReceipt:
    publisher = services.publisher
    if publisher is None:
        raise HTTPException(status_code=503, detail="this API instance does not accept writes")
    try:
        await publisher.start()
        receipt = await publisher.publish(event)
    except KafkaError as exc:
        raise HTTPException(
            status_code=503, detail=f"Kafka did not accept the write: {type(exc).__name__}: {exc}"
        ) from exc
    token = ConsistencyToken(receipt.topic, receipt.partition, receipt.offset)
    return WriteReceipt(
        # Named as the caller named it, without its tenant's prefix.
        doc_id=TenantScope(event.tenant).visible_id(event.doc_id),
        event_id=event.event_id,
        version=event.version,
        partition=receipt.partition,
        offset=receipt.offset,
        token=token.encode(),
    )


async def _read_body(request: Request, max_body: int, max_document: int) -> bytes:
    # Counted while it streams in, so an oversized body is refused before it is all in memory.
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise _too_large(int(declared), max_document)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_body:
            raise _too_large(len(body), max_document)
    return bytes(body)


def _too_large(size: int, limit: int) -> HTTPException:
    return HTTPException(
        status_code=413,
        detail=f"the document is too large: {size} bytes, the limit is {limit} bytes of content "
        "(RAGSTREAM_MAX_DOCUMENT_BYTES)",
    )


def _invalid(exc: ValidationError, where: str, path_fields: frozenset[str] = frozenset()) -> Exception:
    # The input is left out of the answer: it may be megabytes of document.
    errors = [
        {
            "type": error["type"],
            "loc": ("path" if error["loc"][:1] and error["loc"][0] in path_fields else where, *error["loc"]),
            "msg": error["msg"],
        }
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return RequestValidationError(errors)
