"""`ragstream up` / `status` / `down`, the README's front door, run as a user runs them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from ragstream_cli import ragstream

from deploy import free_port

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def stack_env(tmp_path):
    """Free ports and a state folder of its own, so the test's stack is nobody else's."""
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGSTREAM_", "RAY_"))}
    env |= {
        "RAGSTREAM_STATE_DIR": str(state),
        "RAGSTREAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "RAGSTREAM_CHROMA_PORT": str(free_port()),
        "RAGSTREAM_API_PORT": str(free_port()),
        "COLUMNS": "200",
    }
    yield env
    ragstream(env, "down", timeout=180)


def test_up_serves_the_sample_corpus_through_the_changes_stage_and_down_stops_everything(stack_env):
    api = f"http://127.0.0.1:{stack_env['RAGSTREAM_API_PORT']}"

    up = ragstream(stack_env, "up", "--sample-documents", "20", timeout=900)

    assert up.returncode == 0, up.stdout + up.stderr
    assert f"API {api}" in up.stdout and "Search it" in up.stdout
    pids = {
        path.stem: int(path.read_text())
        for path in (Path(stack_env["RAGSTREAM_STATE_DIR"]) / "pids").glob("*.pid")
    }
    assert {"streams", "consumers", "api"} <= pids.keys()

    hits = httpx.post(f"{api}/v1/search", json={"query": "Guernica painting", "k": 3}, timeout=30).json()[
        "hits"
    ]
    assert len(hits) == 3

    # A write through the API travels events → stage → changes → indexer, across processes.
    written = httpx.put(
        f"{api}/v1/documents/stack/marmot",
        json={
            "content": "<p>The <b>alpine marmot</b> whistles to warn its colony.</p>",
            "content_type": "text/html",
            "source": "stack",
        },
        timeout=30,
    )
    assert written.status_code == 202, written.text
    found = httpx.post(
        f"{api}/v1/search",
        json={"query": "which animal whistles a warning", "filter": {"doc_id": "stack/marmot"}},
        params={"consistent_with": written.json()["token"]},
        timeout=30,
    )
    assert found.status_code == 200, found.text
    # The stage turned the HTML into text before it was indexed.
    assert [hit["text"] for hit in found.json()["hits"]] == ["The alpine marmot whistles to warn its colony."]

    status = ragstream(stack_env, "status", timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "changes stage: docs.events" in status.stdout and "indexer: docs.changes" in status.stdout
    assert "21 documents" in status.stdout

    down = ragstream(stack_env, "down", timeout=180)

    assert down.returncode == 0, down.stdout + down.stderr
    for name in ("API", "consumers", "changes stage", "Ray", "Chroma", "Kafka"):
        assert name in down.stdout
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [name for name, pid in pids.items() if alive(pid)]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{api}/healthz", timeout=5)
