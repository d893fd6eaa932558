"""``X-Ragstream-Replica`` on every response: which copy of the API behind a load balancer answered,
for the operator reading a log line and for the failover tests that count answers per replica."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REPLICA_HEADER", "ReplicaHeaderMiddleware"]

REPLICA_HEADER = "x-ragstream-replica"


class ReplicaHeaderMiddleware:
    """Pure ASGI (no response buffering), so streamed answers pass through as they are written."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self._app = app
        self._header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._header]}
            await send(message)

        await self._app(scope, receive, send_with_header)
