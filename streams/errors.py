"""What can go wrong talking to Kafka, and whether trying again can help.

    StreamsError               root, an aiokafka ``KafkaError``; ``retriable`` says whether a retry can help
    ├── BrokerUnavailable      no broker answered, a request timed out, a leader is moving: retriable
    ├── RecordRejected         the broker refuses this record for what it is (too large, corrupt)
    └── BrokerRefused          the broker refuses this client: credentials, authorisation, an
                               unsupported version, a fenced or closed producer; an operator must act

``broker_calls`` wraps calls of an aiokafka client and raises what they raise as one of these,
saying what failed. The root is a ``KafkaError`` so that callers written against the client (the
API answers 503 to any ``KafkaError``) handle ours unchanged, and ``retriable`` keeps aiokafka's
meaning.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from aiokafka.errors import (
    BrokerNotAvailableError,
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    KafkaUnavailableError,
    MessageSizeTooLargeError,
    OperationNotAttempted,
    QuotaViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    ReplicaNotAvailableError,
    UnknownError,
)

__all__ = [
    "BrokerRefused",
    "BrokerUnavailable",
    "RecordRejected",
    "StreamsError",
    "broker_calls",
    "broker_error",
    "causes",
    "describe",
    "is_network_failure",
    "translated_errors",
]

E = TypeVar("E", bound=BaseException)


class StreamsError(KafkaError):
    def __str__(self) -> str:
        # KafkaError puts the class name first; our messages say what failed and why themselves.
        return Exception.__str__(self)


class BrokerUnavailable(StreamsError):
    retriable = True


class RecordRejected(StreamsError):
    pass


class BrokerRefused(StreamsError):
    pass


#: What the broker (or the producer, before sending) refuses a record for, whenever it is sent.
_RECORD_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTimestampError,
    CorruptRecordException,
)
#: Retriable although aiokafka says otherwise: a send or a metadata wait gives up with
#: KafkaTimeoutError when no broker answered in ``request_timeout_ms``; a broker or a replica
#: that is not available comes back; a quota throttles for a while (HTTP's 429); UnknownError is
#: the broker's own unexpected failure (its 500); OperationNotAttempted says another request of
#: the batch failed.
_UNAVAILABLE_ERRORS = (
    KafkaTimeoutError,
    KafkaUnavailableError,
    BrokerNotAvailableError,
    ReplicaNotAvailableError,
    QuotaViolationError,
    UnknownError,
    OperationNotAttempted,
)

#: errno values of a network failure that a later try may not meet.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
    }
)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then the error it was raised from or while handling, and so on."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def describe(exc: BaseException) -> str:
    """``ClassName: message``, without repeating a class name the message starts with (KafkaError's)."""
    text, name = str(exc), type(exc).__name__
    if not text:
        return name
    return text if name in text.partition(":")[0] else f"{name}: {text}"


def is_network_failure(exc: BaseException) -> bool:
    """True for a refused, reset or timed-out connection, an unreachable host or a name that does
    not resolve (a Service that is not registered yet): a later try may succeed. False for any other
    ``OSError`` (a permission, a missing file: the deployment's, not the network's).

    An ``OSError`` without an errno (``OSError("All connection attempts failed")``) is judged by
    the error it was raised from.
    """
    for link in causes(exc):
        if isinstance(link, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
            return True
        if isinstance(link, OSError) and link.errno is not None:
            return link.errno in _NETWORK_ERRNOS
    return False


def broker_error(exc: KafkaError | OSError, doing: str) -> StreamsError:
    """What an error of an aiokafka call means; ``doing`` says what the call was for."""
    if isinstance(exc, StreamsError):
        return exc
    what = f"{doing}: {describe(exc)}"
    if isinstance(exc, _RECORD_ERRORS):
        return RecordRejected(what)
    if isinstance(exc, KafkaError):
        if exc.retriable or isinstance(exc, _UNAVAILABLE_ERRORS):
            return BrokerUnavailable(what)
        return BrokerRefused(what)
    return BrokerUnavailable(what) if is_network_failure(exc) else BrokerRefused(what)


def broker_calls(doing: str) -> AbstractContextManager[None]:
    """Raise what aiokafka calls inside raise as a ``StreamsError`` that says ``doing`` failed."""
    return translated_errors((KafkaError, OSError), lambda exc: broker_error(exc, doing), keep=StreamsError)


@contextmanager
def translated_errors(
    catch: tuple[type[E], ...], translate: Callable[[E], Exception], *, keep: type[Exception]
) -> Iterator[None]:
    """Raise an error of the ``catch`` kinds from inside as ``translate`` makes it (chained to it);
    one of the ``keep`` kind, already translated, goes through as it is."""
    try:
        yield
    except keep:
        raise
    except catch as exc:
        raise translate(exc) from exc
