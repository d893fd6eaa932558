"""Joining Ray: the cluster named by ``RAY_ADDRESS``, or a local one of this process's own.

``ragstream consume`` and ``ragstream serve`` both run on Ray; both join it this one way.

``ray.init`` runs on a thread of its own that lives as long as the connection, for two reasons:

- Ray ties the calling thread to the session: it sets that thread's task context to the driver's
  task, whose id depends only on the job id, and the first job of every new cluster is the same
  one. A thread that called ``ray.init`` for one session, and still submits tasks in a later
  session of the same process, then numbers its tasks as the new session's init thread does, and
  the process dies in Ray's core ("Tried to create an owned object that already exists", exit 1,
  no Python traceback). A pool thread that called ``ray.init`` once is such a thread; the owner
  thread below submits nothing.
- A local cluster's GCS and raylet are started with the parent-death signal, which Linux sends
  when the *thread* that started them ends: the thread must outlive the session.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Any

__all__ = ["join_or_start_ray"]

#: How often the owner thread checks whether the session is still up (it ends after a shutdown).
_OWNER_POLL_S = 1.0


def join_or_start_ray(namespace: str, *, num_cpus: int | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS``, or start a one-node cluster that lives as long as this
    process (with ``num_cpus`` CPUs, default the machine's); nothing if Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _init_on_owner_thread(address=address, namespace=namespace, logging_level=logging.WARNING)
        return
    _init_on_owner_thread(
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


def _init_on_owner_thread(**options: Any) -> None:
    """``ray.init(**options)`` on a new thread that then waits, submitting nothing, until the
    session is shut down; raises what ``ray.init`` raised."""
    import ray

    connected: Future[None] = Future()

    def own_the_session() -> None:
        try:
            ray.init(**options)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            connected.set_exception(exc)
            return
        connected.set_result(None)
        while ray.is_initialized():
            time.sleep(_OWNER_POLL_S)

    threading.Thread(target=own_the_session, name="ray-session-owner", daemon=True).start()
    connected.result()
