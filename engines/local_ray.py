"""Joining Ray: the cluster named by ``RAY_ADDRESS``, or a local one of this process's own.

``ragstream consume`` and ``ragstream serve`` both run on Ray; both join it this one way.
"""

from __future__ import annotations

import logging
import os

__all__ = ["join_or_start_ray"]


def join_or_start_ray(namespace: str, *, num_cpus: int | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS``, or start a one-node cluster that lives as long as this
    process (with ``num_cpus`` CPUs, default the machine's); nothing if Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=namespace, logging_level=logging.WARNING)
        return
    ray.init(
        # Never a cluster that another `ray start` on this host left: without an address, Ray
        # would join the last one started, whoever started it.
        address="local",
        namespace=namespace,
        num_cpus=num_cpus,
        include_dashboard=False,
        configure_logging=True,
        logging_level=logging.WARNING,
        # Ray nices its workers (15) to keep its own daemons responsive; ours are the consumers,
        # the API's proxy and replicas, which must yield neither to each other nor to the broker
        # and Chroma beside them. (A cluster that is joined keeps its own setting.)
        _system_config={"worker_niceness": 0},
    )
