"""What can go wrong while indexing, and what the consumer does about it.

    IndexingError              root; ``retriable`` says whether the same batch can succeed later
    ├── IndexUnavailable       Chroma or Kafka unreachable, timed out, overloaded (5xx, 429): the
    │                          batch is retried from the committed offsets after a backoff
    ├── EventRejected          an event that can never be indexed (Chroma refuses its data, a
    │                          record too large): the batch is applied event by event and only
    │                          the culprits go to the dead-letter topic, with the reason
    └── IndexMisconfigured     neither an event nor an outage: credentials, permissions, a deleted
                               collection, a fenced producer; the consumer stops without
                               committing (``ConsumerGroup.check`` raises it), and starts again
                               from the committed offsets once an operator fixed the deployment

Only these leave the consumer's calls of Chroma and Kafka: ``chroma_calls`` and ``kafka_calls``
wrap those calls and translate what chromadb, httpx and aiokafka raise (``chroma_error``,
``kafka_error``). ``event_data_errors`` wraps our own code and the model where they run on the
events' data (chunking, embedding): what they raise counts against the events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import orjson
from aiokafka.errors import KafkaError
from chromadb.errors import ChromaError

from streams.errors import (
    BrokerUnavailable,
    RecordRejected,
    broker_error,
    causes,
    describe,
    is_network_failure,
    translated_errors,
)

__all__ = [
    "EventRejected",
    "IndexMisconfigured",
    "IndexUnavailable",
    "IndexingError",
    "chroma_calls",
    "chroma_error",
    "event_data_errors",
    "kafka_calls",
    "kafka_error",
]

log = logging.getLogger(__name__)


class IndexingError(Exception):
    retriable = False


class IndexUnavailable(IndexingError):
    retriable = True


class EventRejected(IndexingError):
    """The reason (the message) goes into the dead letter's headers."""

    @property
    def error_class(self) -> str:
        """The class of the error behind the rejection, as ``ragstream dlq list`` shows it."""
        return type(self.__cause__ or self).__name__


class IndexMisconfigured(IndexingError):
    pass


#: httpx's failures to get an answer that a later request may not meet. Its other transport
#: errors (an unsupported scheme, a request httpx itself finds malformed) come from the
#: configuration or the client, and repeat.
_CHROMA_UNREACHED = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
    httpx.DecodingError,
)


def chroma_error(exc: Exception, doing: str) -> IndexingError:
    """What an error of a chromadb call means for the batch; ``doing`` says what the call was for.

    chromadb raises httpx's errors as they are; a server error as a ``ChromaError`` whose
    ``code()`` is its HTTP status; an error body it cannot read as a bare ``Exception`` raised
    while handling httpx's ``HTTPStatusError`` (the status is found there); and ``ValueError`` or
    ``TypeError`` for a request it refuses before sending (metadata types, batch size).
    """
    if isinstance(exc, IndexingError):
        return exc
    what = f"{doing}: {describe(exc)}"
    for link in causes(exc):
        if isinstance(link, _CHROMA_UNREACHED):
            return IndexUnavailable(f"Chroma did not answer ({what})")
        if isinstance(link, (httpx.TransportError, httpx.TooManyRedirects, httpx.InvalidURL)):
            return IndexMisconfigured(f"cannot reach Chroma as configured ({what})")
        status = _http_status(link)
        if status is not None:
            return _for_status(status, what)
        if isinstance(link, OSError):
            if is_network_failure(link):
                return IndexUnavailable(f"Chroma did not answer ({what})")
            return IndexMisconfigured(f"cannot reach Chroma ({what})")
    if isinstance(exc, orjson.JSONDecodeError):
        # A 200 whose body is not JSON: a proxy's page, or a server on its way down.
        return IndexUnavailable(f"Chroma's answer was unreadable ({what})")
    return EventRejected(f"Chroma refused the batch's data ({what})")


def _http_status(exc: BaseException) -> int | None:
    if isinstance(exc, ChromaError):
        return exc.code()
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    return None


def _for_status(status: int, what: str) -> IndexingError:
    if status >= 500 or status in (408, 429):
        return IndexUnavailable(f"Chroma is failing or overloaded, HTTP {status} ({what})")
    if status in (401, 403):
        return IndexMisconfigured(f"Chroma refuses our credentials, HTTP {status} ({what})")
    if status == 404:
        return IndexMisconfigured(f"the collection is gone from Chroma, HTTP 404 ({what})")
    return EventRejected(f"Chroma refused the batch's data, HTTP {status} ({what})")


def kafka_error(exc: KafkaError | OSError, doing: str) -> IndexingError:
    """What an error of an aiokafka call (or of ``streams``, which wraps them) means for the batch."""
    error = broker_error(exc, doing)
    if isinstance(error, BrokerUnavailable):
        return IndexUnavailable(str(error))
    if isinstance(error, RecordRejected):
        return EventRejected(str(error))
    return IndexMisconfigured(str(error))


def chroma_calls(doing: str) -> AbstractContextManager[None]:
    """Raise what chromadb calls inside raise as an ``IndexingError`` that says ``doing`` failed."""
    # Every Exception: chromadb raises bare ones too. Each is classified, and chained, not kept.
    return translated_errors((Exception,), lambda exc: chroma_error(exc, doing), keep=IndexingError)


def kafka_calls(doing: str) -> AbstractContextManager[None]:
    """Raise what aiokafka calls inside raise as an ``IndexingError`` that says ``doing`` failed."""
    return translated_errors((KafkaError, OSError), lambda exc: kafka_error(exc, doing), keep=IndexingError)


@contextmanager
def event_data_errors(doing: str) -> Iterator[None]:
    """Count what our code and the model raise inside against the events they work on.

    The chunker, the tokenizer and the model run on whatever text an event carries, and what they
    raise on it has no bounds we could list (the tokenizer raises bare Exceptions): a retry of the
    same bytes meets it again, so it is an ``EventRejected``, and the event-by-event pass finds the
    events it belongs to. ``IndexingError``s from the services pass through unchanged.
    """
    try:
        yield
    except IndexingError:
        raise
    except Exception as exc:
        log.warning("%s failed in our code or the model: the events count as rejected", doing, exc_info=True)
        raise EventRejected(f"{doing}: {describe(exc)}") from exc
