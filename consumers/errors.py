"""What can go wrong while indexing, and whether trying again can help.

    IndexingError              root; ``retriable`` says whether a retry can succeed
    ├── IndexUnavailable       Chroma or Kafka unreachable, timed out, overloaded: retriable
    └── EventRejected          this event can never be indexed: it goes to the dead-letter topic

Errors from libraries are mapped with ``is_retriable`` rather than wrapped everywhere.
"""

from __future__ import annotations

import httpx
from aiokafka.errors import KafkaError


class IndexingError(Exception):
    retriable = False


class IndexUnavailable(IndexingError):
    retriable = True


class EventRejected(IndexingError):
    """Raised for one event; carries the reason that goes into the dead-letter headers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_retriable(exc: BaseException) -> bool:
    """True when the failure is about the services, not the data: the same batch may succeed later."""
    if isinstance(exc, IndexingError):
        return exc.retriable
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, ConnectionError)
    if isinstance(exc, (httpx.TransportError, TimeoutError, ConnectionError, OSError)):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    # chromadb maps server errors to its own classes; a 5xx or an unknown server-side
    # failure may clear, a 4xx-style validation error will not.
    name = type(exc).__name__
    return name in {"InternalError", "ChromaError", "RateLimitError", "ServiceUnavailableError"}
