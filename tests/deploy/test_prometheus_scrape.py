"""A real Prometheus scrapes a running stack: every series the alerts and the dashboard read is there."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_files import RULES, load_dashboard_builder, prometheus_tool
from ragstream_cli import ragstream

from deploy import free_port
from deploy.ray_cluster import RayCluster

pytestmark = pytest.mark.integration


#: A series name in PromQL: ours, and Ray Serve's. Recording rules' names have colons, and may
#: end in their range (``…:rate5m``).
SERIES = re.compile(r"\b(?:ragstream[a-z0-9_:]*|ray_serve_[a-z_]+)\b")


def used_series() -> set[str]:
    """Every series name the rules and the dashboard's queries read, recording rules' included."""
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    expressions = [rule["expr"] for rule in rules] + load_dashboard_builder().queries()
    return {name for expr in expressions for name in SERIES.findall(expr)}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The smallest whole stack: a handful of documents, one Ray node, one API replica."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGSTREAM_", "RAY_"))}
    env |= {
        "RAGSTREAM_STATE_DIR": str(tmp_path / "state"),
        "RAGSTREAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "RAGSTREAM_CHROMA_PORT": str(free_port()),
        "RAGSTREAM_API_PORT": str(free_port()),
        "RAGSTREAM_API_REPLICAS": "1",
        "RAGSTREAM_RAY_NODES": "1",
    }
    try:
        up = ragstream(env, "up", "--sample-documents", "5", "--consumers", "1", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        yield env
    finally:
        ragstream(env, "down", timeout=180)


def _prometheus_config(env: dict[str, str], directory: Path) -> Path:
    ray = RayCluster(Path(env["RAGSTREAM_STATE_DIR"]).resolve(), int(env["RAGSTREAM_RAY_NODES"]))
    ray_targets = [f"127.0.0.1:{node.ports.metrics_export}" for node in ray.nodes if node.ports is not None]
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "ragstream-api",
                "static_configs": [{"targets": [f"127.0.0.1:{env['RAGSTREAM_API_PORT']}"]}],
            },
            {"job_name": "ray", "static_configs": [{"targets": ray_targets}]},
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus_url(stack: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = [
        str(prometheus_tool("prometheus")),
        f"--config.file={_prometheus_config(stack, tmp_path)}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (tmp_path / "prometheus.log").open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _present(url: str, name: str) -> bool:
    try:
        answer = httpx.get(
            f"{url}/api/v1/query", params={"query": f'count({{__name__="{name}"}})'}, timeout=5
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and bool(answer.json()["data"]["result"])


def test_every_series_the_alerts_and_the_dashboard_read_is_scraped_from_the_stack(
    stack: dict[str, str], prometheus_url: str
) -> None:
    api = f"http://127.0.0.1:{stack['RAGSTREAM_API_PORT']}"
    for mode in ("vector", "lexical", "hybrid"):
        found = httpx.post(f"{api}/v1/search", json={"query": "painting", "k": 2, "mode": mode}, timeout=30)
        assert found.status_code == 200, found.text
    expected = used_series()

    missing = expected
    deadline = time.monotonic() + 120
    while missing and time.monotonic() < deadline:
        missing = {name for name in missing if not _present(prometheus_url, name)}
        time.sleep(2)

    assert not missing, f"not scraped: {sorted(missing)}"
    assert "ray_serve_deployment_replica_healthy" in expected
