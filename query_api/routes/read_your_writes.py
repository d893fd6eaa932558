"""Read-your-writes for the routes: wait until the index includes the write a token names, or
answer with the HTTP error that says why not."""

from __future__ import annotations

from aiokafka.errors import KafkaError
from fastapi import HTTPException

from query_api.consistency import ConsistencyToken, IndexBehind, InvalidToken, wait_until_indexed
from query_api.services import Services

__all__ = ["wait_for_write"]


async def wait_for_write(services: Services, raw_token: str, *, lexical: bool) -> None:
    """Return once this replica's index includes the write ``raw_token`` names (``lexical``: its
    BM25 index too); 400 for a token no write returned, 504 when the index stays behind, 503
    without Kafka to check against."""
    try:
        token = ConsistencyToken.decode(raw_token)
        await wait_until_indexed(services, token, lexical=lexical)
    except InvalidToken as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    except IndexBehind as exc:
        raise HTTPException(status_code=504, detail=str(exc)) from exc
    except KafkaError as exc:
        raise HTTPException(
            status_code=503, detail=f"Kafka is unreachable, cannot check consistent_with: {exc}"
        ) from exc
