"""Which ports our launchers choose, by range: one owner for every range, so that none overlap.

- ``SERVICE_PORTS`` (``free_port``): Kafka, Chroma, the API, Prometheus... Below Linux's ephemeral
  range (32768-60999), which the kernel hands to every ``bind(0)`` (Ray picks its metrics and
  object-manager ports there, at random, at any time): a port chosen from the ephemeral range
  could be taken by such a process between our choice and the server's bind.
- ``RAY_WORKER_PORTS`` (``free_port_block``): our Ray launcher's worker ports, one block per node,
  above Ray's own default worker ports (10002-19999) and below ``SERVICE_PORTS``.
"""

from __future__ import annotations

import random
import socket

__all__ = ["RAY_WORKER_PORTS", "SERVICE_PORTS", "free_port", "free_port_block", "port_is_free"]

SERVICE_PORTS = (28_001, 32_767)
RAY_WORKER_PORTS = (20_000, 28_000)
_TRIES = 200


def port_is_free(port: int, host: str = "") -> bool:
    """Whether a TCP socket can bind ``port`` on ``host`` now ("" is every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from ``SERVICE_PORTS``."""
    low, high = SERVICE_PORTS
    for _ in range(_TRIES):
        port = random.randint(low, high)
        if port_is_free(port, "127.0.0.1"):
            return port
    raise RuntimeError(f"no free TCP port between {low} and {high} on 127.0.0.1 after {_TRIES} tries")


def free_port_block(size: int, taken: set[int]) -> int | None:
    """The first of ``size`` consecutive ports in ``RAY_WORKER_PORTS``, free on every interface and
    none in ``taken``; None when no such block was found."""
    low, high = RAY_WORKER_PORTS
    for _ in range(_TRIES):
        first = random.randrange(low, high - size)
        block = range(first, first + size)
        if not taken.intersection(block) and all(port_is_free(port) for port in block):
            return first
    return None
