"""A replica's own HTTP server on the API's port: searches reach a replica without Serve's proxy.

Through Serve's proxy a search makes an extra hop: the proxy parses the HTTP request and hands it
to a replica as an actor call, which on 2 cores cost 13–16 ms at p50 (hybrid search at 25/s:
28–29 ms through the proxy, 12–13 ms in one process). With ``api_ingress = "replicas"`` each
replica listens on the API's port itself, a uvicorn server in the replica's process, bound with
SO_REUSEPORT like Serve's proxies: the kernel spreads new connections over the replicas of a
host, and stops handing any to a replica the moment its socket closes, because its process died
or it left the load balancer. A replica binds only once its lifespan has run (its views caught
up with the chunk log), as Serve routes to it only then.

A connection stays with the replica that accepted it, so a client's pool of kept-alive
connections would stay where it was when a replica died and came back, leaving the new one
idle. Each connection is therefore closed after ``MAX_CONNECTION_AGE_S`` (the response says
``Connection: close``), and the client's next connection is spread again, as gRPC's
MAX_CONNECTION_AGE does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

__all__ = ["MAX_CONNECTION_AGE_S", "ReplicaHttpServer", "reuse_port_socket", "serving_in_lifespan"]

#: A connection older than this is closed after its current response.
MAX_CONNECTION_AGE_S = 5.0
#: How long a stopping replica gives its requests in flight.
_GRACEFUL_SHUTDOWN_S = 5
#: Pending connections the kernel holds for a replica's socket.
_BACKLOG = 2048


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other processes of this host may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


class ConnectionAgeLimit:
    """ASGI middleware: ``Connection: close`` on the first response of a connection older than
    ``max_age_s``. A connection is known by its client address and port, unique while it is open."""

    def __init__(self, app: ASGIApp, max_age_s: float) -> None:
        self.app = app
        self._max_age_s = max_age_s
        self._opened: dict[tuple[str, int], float] = {}
        self._next_sweep = time.monotonic() + max_age_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or client is None:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        self._sweep(now)
        opened = self._opened.setdefault(tuple(client), now)
        if now - opened < self._max_age_s:
            await self.app(scope, receive, send)
            return
        del self._opened[tuple(client)]

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)

    def _sweep(self, now: float) -> None:
        """Forget connections closed without a last request here (the client closed them)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._max_age_s
        stale = now - 2 * self._max_age_s
        self._opened = {client: opened for client, opened in self._opened.items() if opened > stale}


class ReplicaHttpServer:
    """``app`` served on ``host:port`` from this replica's event loop, between ``start`` and
    ``stop`` (see ``serving_in_lifespan``)."""

    def __init__(self, app: ASGIApp, host: str, port: int, *, access_log: bool) -> None:
        self._address = (host, port)
        # The app's lifespan is Serve's to run: the server starts once it has run.
        config = uvicorn.Config(
            ConnectionAgeLimit(app, MAX_CONNECTION_AGE_S),
            lifespan="off",
            access_log=access_log,
            log_config=None,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Bind now (an error is raised here) and serve on the running loop."""
        sock = reuse_port_socket(*self._address)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        log.info("serving HTTP on %s:%d beside the other replicas of this host", *self._address)

    def problem(self) -> str | None:
        """Why this server no longer serves though started (None if it does, or is not started)."""
        if self._task is None or not self._task.done():
            return None
        exc = None if self._task.cancelled() else self._task.exception()
        return f"its HTTP server on {self._address[0]}:{self._address[1]} ended ({exc!r})"

    def stop_accepting(self) -> None:
        """Take no new connection: the kernel hands them to the other replicas of this host."""
        for server in getattr(self._server, "servers", []):
            server.close()

    async def stop(self) -> None:
        """Take no new connection, finish the requests in flight, then close every connection."""
        if self._task is None:
            return
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)


def serving_in_lifespan(app: FastAPI, server: ReplicaHttpServer) -> None:
    """Make ``app``'s lifespan start ``server`` once the app's own start-up has run (the views
    have caught up) and stop it before the app's clients close."""
    own = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with own(app) as state:
            server.start()
            try:
                yield state
            finally:
                await server.stop()

    app.router.lifespan_context = lifespan
