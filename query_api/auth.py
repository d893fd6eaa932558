"""API keys: with keys configured, every ``/v1`` request must present one, and its tenant goes along.

The check is ASGI middleware on the path rather than a dependency of each router, so that a route
added under ``/v1`` later is protected without anyone remembering to. Health, readiness, metrics,
the status page and the API docs stay open: probes and scrapers hold no keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.api_keys import ApiKeyEntry, match_api_key

__all__ = ["ApiKeyMiddleware", "Caller", "CallerDep", "get_caller"]

PROTECTED_PREFIX = "/v1"

_MISSING = (
    "an API key is required: send it as 'Authorization: Bearer <key>' (or 'X-API-Key: <key>')",
    'Bearer realm="ragstream"',
)
_INVALID = (
    "the API key is not valid",
    'Bearer realm="ragstream", error="invalid_token"',
)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a tenant sees only its own documents; None sees all of them."""

    tenant: str | None = None


class ApiKeyMiddleware:
    """Answers 401 to a ``/v1`` request without a valid key; otherwise records its ``Caller``."""

    def __init__(self, app: ASGIApp, keys: Sequence[ApiKeyEntry]) -> None:
        self.app = app
        self.keys = tuple(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not _is_protected(scope):
            await self.app(scope, receive, send)
            return
        if not self.keys:
            caller = Caller()
        else:
            key = _presented_key(scope)
            entry = match_api_key(key, self.keys) if key else None
            if entry is None:
                if scope["type"] == "websocket":
                    # Closing before accepting makes the server refuse the handshake.
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    detail, challenge = _INVALID if key else _MISSING
                    await _unauthorized(send, detail, challenge)
                return
            caller = Caller(entry.tenant)
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def get_caller(request: Request) -> Caller:
    """FastAPI dependency: the caller ``ApiKeyMiddleware`` admitted.

    ``async`` though it awaits nothing: FastAPI runs a plain ``def`` dependency on a worker
    thread, a round trip that under load waits for the GIL twice for a dictionary lookup."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        # Serving a document route without the middleware would skip every tenant check.
        raise RuntimeError("ApiKeyMiddleware did not see this request: it must wrap every /v1 route")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def _is_protected(scope: Scope) -> bool:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def _presented_key(scope: Scope) -> str | None:
    headers = {name.lower(): value for name, value in scope["headers"]}
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return api_key or None


async def _unauthorized(send: Send, detail: str, challenge: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
