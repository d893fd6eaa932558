"""``GET /healthz`` (the process answers) and ``GET /readyz`` (Kafka and Chroma answer it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from query_api.services import ServicesDep

log = logging.getLogger(__name__)

__all__ = ["router"]

router = APIRouter()

#: How long readiness waits for each dependency before calling it unreachable.
READINESS_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Kafka or Chroma is unreachable"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when both Kafka and Chroma answer, else 503 naming the one that did not."""

    async def kafka() -> None:
        await services.lag_reader.start()
        await services.lag_reader.ping()

    async def chroma() -> None:
        await services.chroma.heartbeat()

    kafka_check, chroma_check = await asyncio.gather(_check(kafka()), _check(chroma()))
    checks = {"kafka": kafka_check, "chroma": chroma_check}
    ready = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _check(probe: Awaitable[None]) -> str:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await probe
    except TimeoutError:
        return f"unreachable: no answer within {READINESS_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001
        # Blind: whatever a probe raises (chromadb raises a bare Exception for an error status) is
        # the reason the 503 gives.
        log.warning("readiness: a probe failed: %s: %s", type(exc).__name__, exc)
        return f"unreachable: {type(exc).__name__}: {exc}"
    return "ok"
