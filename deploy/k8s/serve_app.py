"""The query API's Serve application as a KubeRay RayService builds it.

The RayService's ``serveConfigV2`` names ``deploy.k8s.serve_app:build_app`` as its import path;
Serve calls it on the cluster with the application's ``args``. It builds the same deployment as
``ragstream serve``: ``RAGSTREAM_API_REPLICAS`` replicas of the API with the resources, health
check and request limits of ``ragstream.api_replicas``, from the ``RAGSTREAM_*`` variables that
every Ray pod is given. What ``ragstream serve`` passes to ``serve.start`` (the proxy's address,
and where proxies run) is the RayService's ``http_options`` and ``proxy_location`` instead.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from ragstream.api_replicas import replica_deployment
from schemas import Settings

__all__ = ["build_app"]


def build_app(args: dict[str, Any]) -> Application:
    """The API replicas, configured by the environment like every other ragstream command."""
    if args:
        # One place configures the API: the RAGSTREAM_* variables. Arguments here would be a
        # second one that `ragstream serve` never reads.
        raise ValueError(f"build_app takes no arguments; set RAGSTREAM_* variables instead: {sorted(args)}")
    # On Kubernetes the RayService's proxies are the door, behind its Service: a replica that bound
    # the API's port itself would listen inside its pod, where no Service sends anything.
    settings = Settings().model_copy(update={"api_ingress": "proxy"})
    return replica_deployment(settings, settings.api_replicas)
