"""The query API as a Ray Serve application: ``api_replicas`` copies of the FastAPI app, each with
its own views of the chunk log, so that one replica's death costs only its requests in flight.
HTTP reaches them through Serve's proxy on every node, or (``api_ingress = "replicas"``) each
replica listens on the API's port itself (``ragstream.replica_http``).

Each replica builds its app inside its own process (``__serve_build_asgi_app__``), so the app's
lifespan opens and closes every client there, as under uvicorn; Serve routes to a replica only
once that lifespan has run, which waits for the views to replay the chunk log. Afterwards
``check_health`` takes a replica out (Serve replaces it) when its views fall behind or it loses
Kafka or Chroma for longer than a grace period (see ``query_api.replica_health``); a replica
serving HTTP itself stops accepting connections first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.schema import ReplicaState

from engines.local_ray import join_or_start_ray
from query_api import create_app
from query_api.replica_health import ReplicaHealth
from ragstream.replica_http import ReplicaHttpServer, serving_in_lifespan
from schemas import Settings
from schemas.logs import configure_logging

log = logging.getLogger(__name__)

__all__ = [
    "APP_NAME",
    "DEPLOYMENT_NAME",
    "QueryApiReplica",
    "deploy_api_replicas",
    "run_api_replicas",
    "running_replicas",
]

APP_NAME = "ragstream"
DEPLOYMENT_NAME = "query-api"
#: Serve asks every replica this often whether it is healthy; one that fails is replaced.
HEALTH_CHECK_PERIOD_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 15.0
#: Serve's controller checks its proxy every 10 s and replaces it after 3 failed checks: a dead
#: proxy went unnoticed for ~30 s. Checked every second, it is replaced a few seconds after it
#: dies. And each proxy routes to every replica alike, not to its own node's first: once one
#: proxy takes all the traffic (the other died), preferring its node's replica kept that one at
#: its request limit, rejecting, while the other idled; searches then waited for seconds.
CONTROLLER_ENV = {
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "1",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "2",
    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
}


def controller_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of Serve's controller, which its proxies and replicas inherit: ours, then
    every ``RAY_SERVE_*`` variable ``ragstream serve`` was started with, so that Serve's own
    settings reach its processes even on a cluster started elsewhere."""
    return CONTROLLER_ENV | {name: value for name, value in environ.items() if name.startswith("RAY_SERVE_")}


@serve.ingress()
class QueryApiReplica:
    """One replica: the query API app, and the health check that Serve's controller calls."""

    def __init__(self, settings: Settings) -> None:
        # Its own process: Serve set up only its own loggers there.
        configure_logging("api", settings.log_format)
        # A line per health probe of Chroma, and per weight quantised at start, would drown the rest.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("onnxruntime").setLevel(logging.WARNING)
        self._settings = settings
        self._health = ReplicaHealth(settings.api_max_view_lag, settings.api_health_grace_s)
        self._app: FastAPI | None = None
        self._http: ReplicaHttpServer | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        replica = serve.get_replica_context().replica_id.unique_id
        self._app = create_app(self._settings, replica=replica)
        if self._settings.api_ingress == "replicas":
            settings = self._settings
            self._http = ReplicaHttpServer(
                self._app, settings.api_host, settings.api_port, access_log=settings.api_access_log
            )
            serving_in_lifespan(self._app, self._http)
        return self._app

    async def check_health(self) -> None:
        services = getattr(self._app.state, "services", None) if self._app is not None else None
        if services is None:
            return  # still starting: Serve waits for the lifespan before routing here
        problem = await self._health.problem(services)
        if problem is None and self._http is not None:
            problem = self._http.problem()
        if problem is not None:
            log.warning("leaving the load balancer: %s", problem)
            if self._http is not None:
                self._http.stop_accepting()
            raise RuntimeError(problem)


def replica_deployment(settings: Settings, replicas: int) -> Any:
    """The deployment with its resources: Ray places a replica only where its memory fits."""
    deployment: Any = serve.deployment(
        QueryApiReplica,
        name=DEPLOYMENT_NAME,
        num_replicas=replicas,
        ray_actor_options={
            "num_cpus": settings.api_replica_num_cpus,
            "memory": settings.api_replica_memory_bytes,
        },
        max_ongoing_requests=settings.api_replica_max_ongoing_requests,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        # Serve's own line per request cost as much as uvicorn's (see api_access_log).
        logging_config={"enable_access_log": settings.api_access_log},
        # A replica whose lifespan fails (say, Chroma away) is tried again, not given up on.
        max_constructor_retry_count=1_000_000,
    )
    return deployment.bind(settings)


def deploy_api_replicas(settings: Settings, replicas: int) -> None:
    """Start Serve on the connected Ray cluster and deploy the replicas; returns once they all
    serve. The application lives on in the cluster until ``serve.shutdown()``."""
    # A proxy on every node, so that no single process is the door. Nodes may share a host: Serve's
    # proxies bind with SO_REUSEPORT, so the kernel spreads new connections over every live one
    # and stops handing any to a proxy the moment it dies. With ingress "replicas", the replicas
    # bind the port so themselves and Serve runs no proxy (see ragstream.replica_http).
    serve.start(
        proxy_location="EveryNode" if settings.api_ingress == "proxy" else "Disabled",
        http_options={"host": settings.api_host, "port": settings.api_port},
        controller_options={"runtime_env": {"env_vars": controller_env(os.environ)}},
    )
    serve.run(replica_deployment(settings, replicas), name=APP_NAME, route_prefix="/", blocking=False)


def run_api_replicas(settings: Settings, replicas: int, stop: threading.Event) -> None:
    """Deploy ``replicas`` replicas behind Serve's proxy on the API's address, serve until
    ``stop`` is set, then take the application down. Joins the Ray cluster in ``RAY_ADDRESS``, or
    starts a local one that lives as long as this process."""
    join_or_start_ray(APP_NAME)
    started = time.monotonic()
    deploy_api_replicas(settings, replicas)
    log.info("%d API replicas ready in %.1f s", replicas, time.monotonic() - started)
    try:
        while not stop.wait(timeout=1.0):
            pass
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()


def running_replicas() -> int:
    """Replicas Serve routes to now (state RUNNING), as its controller reports them; 0 before
    the application is deployed. Needs a connection to the cluster (``ray.init``)."""
    application = serve.status().applications.get(APP_NAME)
    if application is None or DEPLOYMENT_NAME not in application.deployments:
        return 0
    return int(application.deployments[DEPLOYMENT_NAME].replica_states.get(ReplicaState.RUNNING, 0))
