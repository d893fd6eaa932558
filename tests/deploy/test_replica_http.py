"""Replicas that serve HTTP themselves on one port: the kernel spreads connections over them, one
that stops accepting gets none, a replica binds only once its app has started, and an old
connection is closed so that clients spread again."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from deploy import free_port
from ragstream.replica_http import ConnectionAgeLimit, ReplicaHttpServer, serving_in_lifespan

HOST = "127.0.0.1"


def named_app(name: str) -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who() -> str:
        return name

    return app


async def answered_by(port: int, connections: int) -> list[str]:
    """Who answers each of ``connections`` requests, each on a new connection."""
    names = []
    for _ in range(connections):
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            names.append((await client.get("/who")).json())
    return names


async def test_replicas_share_the_port_and_one_that_stops_accepting_gets_no_new_connection() -> None:
    port = free_port()
    first = ReplicaHttpServer(named_app("first"), HOST, port, access_log=False)
    second = ReplicaHttpServer(named_app("second"), HOST, port, access_log=False)
    first.start()
    second.start()
    try:
        await asyncio.sleep(0.2)
        assert set(await answered_by(port, 40)) == {"first", "second"}
        first.stop_accepting()
        assert set(await answered_by(port, 40)) == {"second"}
        assert first.problem() is None and second.problem() is None
    finally:
        await first.stop()
        await second.stop()
    with pytest.raises(httpx.ConnectError):
        await answered_by(port, 1)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


async def test_a_replica_binds_only_once_its_app_has_started_and_stops_serving_before_it_closes() -> None:
    port = free_port()
    started, leave, events = asyncio.Event(), asyncio.Event(), []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await started.wait()  # the views replaying
        events.append("app started")
        yield
        events.append(f"app closing, port open: {port_open(port)}")

    app = named_app("replica")
    app.router.lifespan_context = lifespan
    server = ReplicaHttpServer(app, HOST, port, access_log=False)
    serving_in_lifespan(app, server)

    async def run_lifespan() -> None:  # as Serve runs it
        async with app.router.lifespan_context(app):
            await leave.wait()

    running = asyncio.create_task(run_lifespan())
    await asyncio.sleep(0.3)
    assert not port_open(port)
    started.set()
    deadline = time.monotonic() + 10
    while not port_open(port):
        assert time.monotonic() < deadline, "the replica did not bind after its start-up"
        await asyncio.sleep(0.05)
    assert await answered_by(port, 1) == ["replica"]
    leave.set()
    await running
    assert events == ["app started", "app closing, port open: False"]


async def test_an_old_connection_is_closed_after_its_response_and_a_new_one_is_not() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            seen.append(message["headers"])

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    limited = ConnectionAgeLimit(app, max_age_s=0.2)
    old = {"type": "http", "client": ("127.0.0.1", 5000)}
    new = {"type": "http", "client": ("127.0.0.1", 5001)}
    await limited(old, receive, send)
    await asyncio.sleep(0.25)
    await limited(new, receive, send)
    await limited(old, receive, send)
    await limited(old, receive, send)  # the client's next connection on that port is a new one
    closes = [(b"connection", b"close") in headers for headers in seen]
    assert closes == [False, False, True, False]
