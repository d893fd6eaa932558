"""The query API as users run it in production: `ragstream serve --replicas 2`, two replicas behind
one address, each with its own views of the chunk log, on the real pipeline; HTTP reaching them
each way there is (`RAGSTREAM_API_INGRESS`): the replicas listening on the port themselves, and
Ray Serve's proxy in front of them.

Everything an application relies on must hold behind that address: writes and read-your-writes
tokens, tenant keys, streamed answers, Server-Timing and metrics that say which replica answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from retrying_client import RetryingClient, steady_searches

from deploy import free_port
from deploy._process import ManagedProcess
from ragstream.stack import LocalStack
from schemas import Settings
from schemas.api_keys import ApiKeyEntry, new_api_key

pytestmark = pytest.mark.integration

KEYS = {"admin": new_api_key(), "acme": new_api_key(), "globex": new_api_key()}
REPLICAS = 2


@pytest.fixture(scope="module", params=["replicas", "proxy"])
async def replicas_settings(request, pipeline_settings: Settings, consumer_group) -> Settings:
    """The pipeline's topics, served by replicas on a port of their own, with keys for two tenants."""
    return pipeline_settings.model_copy(
        update={
            "api_ingress": request.param,
            "api_port": free_port(),
            "api_replicas": REPLICAS,
            "answer_generator": "extractive",
            "api_keys": (
                ApiKeyEntry.for_key(KEYS["admin"]),
                ApiKeyEntry.for_key(KEYS["acme"], "acme"),
                ApiKeyEntry.for_key(KEYS["globex"], "globex"),
            ),
        }
    )


@pytest.fixture(scope="module")
async def serve_process(replicas_settings: Settings) -> AsyncIterator[ManagedProcess]:
    """`ragstream serve` as `make up` runs it, once both replicas answer on its address."""
    stack = LocalStack(replicas_settings)
    process = stack.api_process()
    process.start()
    ready_replicas: set[str] = set()

    def both_replicas_ready() -> bool:
        # One ready answer says only that one replica is routed to: the second may still be
        # loading its query model, and searches would all go to the first.
        response = httpx.get(f"{stack.api_url}/readyz", timeout=2)
        if response.status_code == 200:
            ready_replicas.add(response.headers["x-ragstream-replica"])
        return len(ready_replicas) == REPLICAS

    try:
        await asyncio.to_thread(process.wait_until, both_replicas_ready, 600, "both API replicas")
        yield process
    finally:
        await asyncio.to_thread(process.stop, 60)


@pytest.fixture(scope="module")
async def api(replicas_settings: Settings, serve_process: ManagedProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API's address that opens a connection per request: replicas listening on
    the port themselves are chosen per connection, Serve's proxy chooses per request."""
    url = LocalStack(replicas_settings).api_url
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=fresh_connections) as client:
        yield client


def key(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[name]}"}


async def write(api: httpx.AsyncClient, tenant: str, doc_id: str, text: str) -> str:
    response = await api.put(f"/v1/documents/{doc_id}", json={"content": text}, headers=key(tenant))
    assert response.status_code == 202, response.text
    return response.json()["token"]


async def search(api: httpx.AsyncClient, tenant: str, query: str, **body) -> httpx.Response:
    response = await api.post("/v1/search", json={"query": query, "k": 5, **body}, headers=key(tenant))
    assert response.status_code == 200, response.text
    return response


async def test_two_replicas_answer_searches_behind_one_address(api: httpx.AsyncClient) -> None:
    answered_by = set()
    for _ in range(40):
        response = await search(api, "admin", "anything at all")
        answered_by.add(response.headers["x-ragstream-replica"])
        assert "embed;dur=" in response.headers["server-timing"]
    assert len(answered_by) == REPLICAS


async def test_a_write_is_found_with_its_token_by_whichever_replica_answers(
    api: httpx.AsyncClient,
) -> None:
    marker = uuid.uuid4().hex[:10]
    token = await write(api, "admin", f"replicas/{marker}", f"The lighthouse keeper {marker} logs storms.")
    answered_by = set()
    # Each search lands on either replica; each must have indexed the write before answering.
    for _ in range(6):
        response = await search(api, "admin", f"lighthouse keeper {marker}", consistent_with=token)
        answered_by.add(response.headers["x-ragstream-replica"])
        assert [hit["doc_id"] for hit in response.json()["hits"]][:1] == [f"replicas/{marker}"]
    assert answered_by, "no search was answered"


async def test_a_tenants_key_sees_only_its_documents_behind_one_address(api: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex[:10]
    acme = await write(api, "acme", "plans", f"Acme plans {marker}: rocket skates.")
    globex = await write(api, "globex", "plans", f"Globex plans {marker}: a doomsday device.")
    for tenant, token in (("globex", globex), ("acme", acme), ("acme", acme), ("globex", globex)):
        response = await search(api, tenant, f"plans {marker}", consistent_with=token, mode="lexical")
        texts = [hit["text"] for hit in response.json()["hits"]]
        assert texts and all(text.startswith(tenant.title()) for text in texts), texts
    no_key = await api.post("/v1/search", json={"query": "plans"})
    assert no_key.status_code == 401


async def test_an_answer_streams_as_server_sent_events_behind_one_address(api: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex[:10]
    token = await write(api, "admin", f"answers/{marker}", f"The ferry {marker} leaves the harbour at nine.")
    await search(api, "admin", f"ferry {marker}", consistent_with=token)
    # The token: the answer may come from the other replica, which must include the write first.
    body = {
        "query": f"When does the ferry {marker} leave?",
        "stream": True,
        "generator": "extractive",
        "consistent_with": token,
    }
    events = []
    async with api.stream("POST", "/v1/answer", json=body, headers=key("admin")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            elif line.startswith("data: ") and events[-1] == "done":
                answer = orjson.loads(line.removeprefix("data: "))
    assert events[-1] == "done" and "token" in events
    assert any(citation["doc_id"] == f"answers/{marker}" for citation in answer["citations"])


async def test_metrics_behind_one_address_say_which_replica_they_come_from(api: httpx.AsyncClient) -> None:
    replicas = set()
    for _ in range(20):
        response = await api.get("/metrics", params={"name[]": "ragstream_api_replica_info"})
        assert response.status_code == 200
        lines = [
            line for line in response.text.splitlines() if line.startswith("ragstream_api_replica_info{")
        ]
        assert len(lines) == 1, response.text
        replica = response.headers["x-ragstream-replica"]
        assert f'replica="{replica}"' in lines[0]
        replicas.add(replica)
    assert len(replicas) == REPLICAS


# --- failover -----------------------------------------------------------------------------------


def replica_processes(ancestor: int) -> dict[int, str]:
    """pid → command of each Serve replica process descended from ``ancestor``."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    found = {}
    for pid in parents:
        chain, seen = pid, set()
        while chain in parents and chain not in seen and chain != ancestor:
            seen.add(chain)
            chain = parents[chain]
        if chain == ancestor:
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                if command.startswith("ray::ServeReplica:"):
                    found[pid] = command
    return found


async def test_a_replica_killed_under_load_is_replaced_and_a_client_that_retries_once_sees_no_failure(
    api: httpx.AsyncClient, serve_process: ManagedProcess
) -> None:
    client = RetryingClient(api, headers=key("admin"))
    stop = asyncio.Event()
    loading = asyncio.create_task(steady_searches(client, stop))
    await asyncio.sleep(5)
    before = client.replicas_since(0)
    assert len(before) == REPLICAS, "both replicas should answer before the fault"
    replicas = replica_processes(serve_process.pid or 0)
    assert len(replicas) == REPLICAS, replicas
    victim = min(replicas)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    # Back when a replica that did not exist before the fault answers.
    deadline = killed_at + 120
    # Polled: the replicas that answered are collected by the searching task, response by response.
    while not client.replicas_since(killed_at) - before and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    back_after = time.monotonic() - killed_at
    await asyncio.sleep(3)
    stop.set()
    await loading

    during = [sent for sent, _ in client.answered_by if killed_at <= sent <= killed_at + back_after]
    print(
        f"replica killed: back after {back_after:.1f} s; {len(client.answered_by)} searches answered, "
        f"{len(during)} while it was away; first tries failed: {len(client.first_failures)} "
        f"{sorted({status for _, status in client.first_failures})}; after one retry: {len(client.failures)}"
    )
    assert client.replicas_since(killed_at) - before, "no new replica answered within 120 s"
    assert during, "searches should have gone on while the killed replica was away"
    assert client.failures == []
    assert len(replica_processes(serve_process.pid or 0)) == REPLICAS
