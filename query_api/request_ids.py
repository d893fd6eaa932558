"""A request id per HTTP request: taken from ``X-Request-ID`` when the caller (or a proxy in front)
sends a usable one, else made here; bound to every log line written while the request is handled
and returned in the response's ``X-Request-ID``, so a caller's report and the API's logs meet."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.logs import bound_log_context

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware"]

REQUEST_ID_HEADER = "x-request-id"

#: What a caller's id may be: long enough for a UUID or a trace id, and nothing that could forge a
#: log line or a header (no spaces, no control characters).
_USABLE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class RequestIdMiddleware:
    """Pure ASGI (no response buffering), so streamed answers pass through as they are written."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        with bound_log_context(request_id=request_id):
            await self._app(scope, receive, send_with_id)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _USABLE_ID.fullmatch(text) else None
    return None
