"""The ragstream image (deploy/Dockerfile), built here with podman on bases made from Debian's
archive and PyPI (deploy/image/build.sh), run as the user it names against a private Kafka and
Chroma: its `/readyz` and a search, whose vector comes from the model inside the image.

Long only: the first build downloads torch's CUDA wheels (GBs) and takes minutes; a build from
the same context files and bases is reused (build.sh tags the image with their hash). Every step
that cannot run on this machine fails the test with its reason, never skips it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy import ChromaServer, KafkaBroker, free_port
from engines.chroma import open_collection
from engines.chroma_client import open_chroma
from engines.embedder import Embedder
from schemas import Settings
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.long_only]

IMAGE_TOOLS = Path(__file__).resolve().parents[2] / "deploy" / "image"
#: The uid:gid deploy/Dockerfile's USER sets, which the manifests' securityContext names.
IMAGE_USER = "10001:10001"
DOC_ID = "guides/lighthouse"
TEXT = "The lighthouse keeper climbs the spiral stairs each evening to light the lamp for passing ships."


def run(command: list[str], what: str, timeout: float) -> str:
    """``command``'s stdout; the test fails with its output's end when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed ({result.returncode}): {(result.stdout + result.stderr)[-4000:]}", pytrace=False
        )
    return result.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image's name, built by deploy/image/build.sh (or the build of the same tree, reused)."""
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: deploy/image/build.sh needs podman, runc and debootstrap")
    started = time.monotonic()
    name = (
        run([str(IMAGE_TOOLS / "build.sh")], "deploy/image/build.sh", timeout=3 * 3600)
        .strip()
        .splitlines()[-1]
    )
    print(f"image {name}: built or found in {time.monotonic() - started:.0f} s")
    return name


@pytest.fixture(scope="module")
async def settings(kafka_broker: KafkaBroker, chroma_server: ChromaServer) -> Settings:
    """This module's collection and topics on the private stack, holding one chunk indexed with
    the model's vector as the consumers write it."""
    settings = Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers, chroma_port=chroma_server.port, api_port=free_port()
    ).namespaced(f"image-{uuid.uuid4().hex[:8]}")
    await ensure_topics(settings)
    collection = await open_collection(await open_chroma(settings), settings.collection)
    metadata: dict[str, str | int | float] = {
        "doc_id": DOC_ID,
        "version": 1,
        "chunk_index": 0,
        "chunk_count": 1,
        "source": "tests",
        "content_type": "text/plain",
        "indexed_at": time.time(),
    }
    await collection.add(
        ids=[uuid.uuid4().hex], documents=[TEXT], embeddings=Embedder().encode([TEXT]), metadatas=[metadata]
    )
    return settings


@pytest.fixture(scope="module")
def container(image: str, settings: Settings) -> Iterator[str]:
    """The image's own command (`ragstream serve --replicas 0`) on the host's network, given the
    settings that differ from the defaults, as a ConfigMap would; its name once started."""
    defaults = Settings().to_env()
    env = [f"--env={k}={v}" for k, v in settings.to_env().items() if defaults.get(k) != v]
    name = f"ragstream-image-test-{uuid.uuid4().hex[:8]}"
    run(
        [str(IMAGE_TOOLS / "run.sh"), "--detach", "--rm", f"--name={name}", *env, image],
        "podman run",
        timeout=120,
    )
    try:
        yield name
    finally:
        subprocess.run(
            ["podman", "--runtime", "runc", "stop", "--time=10", name], capture_output=True, check=False
        )


def logs(name: str) -> str:
    result = subprocess.run(["podman", "logs", name], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr)[-3000:]


def test_the_image_answers_readyz_and_a_search_as_its_own_user(
    image: str, settings: Settings, container: str
) -> None:
    url = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + 180
    ready = None
    while ready != 200 and time.monotonic() < deadline:
        time.sleep(1)
        with contextlib.suppress(httpx.TransportError):
            ready = httpx.get(f"{url}/readyz", timeout=5).status_code
    assert ready == 200, f"/readyz answered {ready} in 180 s; the container's log: {logs(container)}"

    response = httpx.post(
        f"{url}/v1/search", json={"query": "who lights the lamp for the ships?", "k": 1}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert [hit["doc_id"] for hit in response.json()["hits"]] == [DOC_ID]

    uid = run(["podman", "exec", container, "id", "-u"], "podman exec id -u", timeout=60).strip()
    configured = run(
        ["podman", "image", "inspect", "--format={{.Config.User}}", image], "podman image inspect", 60
    )
    assert (uid, configured.strip()) == ("10001", IMAGE_USER)
    size = int(run(["podman", "image", "inspect", "--format={{.Size}}", image], "podman image inspect", 60))
    print(f"image {image}: {size / 1e9:.2f} GB")
