"""A Chroma server that requires a token, and ``open_chroma`` sending the token of the settings."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from unavailable import skip_or_fail

from deploy import ChromaServer, DeployError, free_port
from engines.chroma import open_collection
from engines.chroma_client import ChromaTokenRefused, open_chroma
from schemas.settings_groups import ChromaSettings

pytestmark = pytest.mark.integration

TOKEN = "ragstream-test-token.1"
T = TypeVar("T")

#: The event loops of this module's clients, kept until the end so that no later loop gets the
#: id (and so chromadb's shared HTTP pool, with its headers) of an earlier one.
_loops: list[asyncio.AbstractEventLoop] = []


def in_own_loop(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` on an event loop of its own.

    chromadb's async clients share one HTTP pool per event loop, with the headers of the first
    client made there: clients with and without the token must each have their own loop, as they
    would in their own processes (and not the session's loop that other modules' clients use).
    """
    loop = asyncio.new_event_loop()
    _loops.append(loop)
    try:
        return loop.run_until_complete(work())
    finally:
        loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    chroma = ChromaServer(tmp_path_factory.mktemp("chroma-token"), free_port(), token=TOKEN)
    with contextlib.ExitStack() as on_exit:
        on_exit.callback(chroma.stop)  # also after a start that failed half-way
        try:
            chroma.start()
        except (DeployError, OSError) as exc:
            skip_or_fail(f"Chroma server with a token could not be started: {exc}")
        yield chroma


def settings_for(server: ChromaServer, token: str | None) -> ChromaSettings:
    secret = SecretStr(token) if token is not None else None
    return ChromaSettings(chroma_host="127.0.0.1", chroma_port=server.port, chroma_token=secret)


async def write_three_vectors(settings: ChromaSettings, name: str) -> None:
    collection = await open_collection(await open_chroma(settings), name)
    await collection.add(
        ids=["east", "north", "up"],
        embeddings=np.eye(3, dtype=np.float32),
        documents=["points east", "points north", "points up"],
    )


async def nearest_and_count(settings: ChromaSettings, name: str) -> tuple[str, int]:
    collection = await open_collection(await open_chroma(settings), name)
    near_north = np.array([[0.1, 0.9, 0.1]], dtype=np.float32)
    result = await collection.query(query_embeddings=near_north, n_results=1)
    return result["ids"][0][0], await collection.count()


def test_a_client_with_the_token_adds_and_queries_vectors(server: ChromaServer) -> None:
    settings = settings_for(server, TOKEN)
    name = f"token-{uuid.uuid4().hex[:8]}"

    in_own_loop(lambda: write_three_vectors(settings, name))

    assert in_own_loop(lambda: nearest_and_count(settings, name)) == ("north", 3)


def test_a_client_without_a_token_is_refused_and_told_to_set_it(server: ChromaServer) -> None:
    with pytest.raises(ChromaTokenRefused, match="none was sent; set RAGSTREAM_CHROMA_TOKEN") as refused:
        in_own_loop(lambda: open_chroma(settings_for(server, None)))

    assert refused.value.url == server.url
    # What any HTTP client sees, e.g. curl.
    listing = f"{server.url}/api/v2/tenants/default_tenant/databases/default_database/collections"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(listing, trust_env=False).status_code == 403
    assert httpx.get(listing, headers=bearer, trust_env=False).status_code == 200


def test_a_client_with_a_wrong_token_is_refused_and_told_to_check_it(server: ChromaServer) -> None:
    with pytest.raises(ChromaTokenRefused, match="refused the token in RAGSTREAM_CHROMA_TOKEN"):
        in_own_loop(lambda: open_chroma(settings_for(server, "not-the-token")))


def test_data_written_with_the_token_survives_a_restart_that_still_requires_it(server: ChromaServer) -> None:
    settings = settings_for(server, TOKEN)
    name = f"restart-{uuid.uuid4().hex[:8]}"
    in_own_loop(lambda: write_three_vectors(settings, name))

    server.stop()
    server.start()

    assert in_own_loop(lambda: nearest_and_count(settings, name)) == ("north", 3)
    with pytest.raises(ChromaTokenRefused):
        in_own_loop(lambda: open_chroma(settings_for(server, None)))


def test_a_token_chroma_would_not_accept_is_refused_before_the_server_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no spaces"):
        ChromaServer(tmp_path, free_port(), token="two words")
