"""Which failures the consumer retries, which dead-letter an event, and which stop it.

Each error is made as its library raises it: chromadb's own code turns an HTTP answer into its
exception, aiokafka's ``for_code`` builds a broker's error from its code, and httpx is asked to
reach a port where nothing listens.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    ProducerClosed,
    ProducerFenced,
    RecordTooLargeError,
    for_code,
)
from chromadb.api.base_http_client import BaseHTTPClient
from chromadb.api.types import validate_metadata

from consumers.errors import (
    EventRejected,
    IndexingError,
    IndexMisconfigured,
    IndexUnavailable,
    chroma_calls,
    event_data_errors,
    kafka_calls,
)
from deploy import free_port
from streams.errors import BrokerUnavailable

REQUEST = httpx.Request("POST", "http://127.0.0.1:8000/api/v2/tenants/t/databases/d/collections/c/upsert")


def chroma_answer(status: int, body: dict[str, str] | None = None, text: str = "") -> Exception:
    """What chromadb raises for this HTTP answer (its own code turns the response into an error)."""
    response = (
        httpx.Response(status, json=body, request=REQUEST)
        if body
        else httpx.Response(status, text=text, request=REQUEST)
    )
    try:
        BaseHTTPClient._raise_chroma_error(response)
    except Exception as exc:  # noqa: BLE001 (whatever chromadb raises is the subject of the test)
        return exc
    raise AssertionError(f"chromadb accepted HTTP {status}")


def answer(status: int, error: str, message: str) -> Callable[[], Exception]:
    """What chromadb raises for a JSON error answer of the Chroma server."""
    return lambda: chroma_answer(status, {"error": error, "message": message})


def raised(outer: Exception, *, within: BaseException) -> Exception:
    """``outer`` as raised while handling ``within`` (how httpx and httpcore wrap socket errors)."""
    try:
        try:
            raise within  # noqa: TRY301 (an error raised inside a handler, as libraries do)
        except BaseException:  # noqa: BLE001 (any error, chained as Python chains it)
            raise outer  # noqa: B904 (the implicit context is the point)
    except Exception as exc:  # noqa: BLE001 (the chained error is the subject of the test)
        return exc


def metadata_error() -> Exception:
    try:
        validate_metadata({"section": {"nested": 1}})
    except ValueError as exc:
        return exc
    raise AssertionError("chromadb accepted nested metadata")


REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 8000)")

CHROMA_CASES: dict[str, tuple[Callable[[], Exception], type[IndexingError]]] = {
    "connection refused": (
        lambda: raised(httpx.ConnectError("All connection attempts failed", request=REQUEST), within=REFUSED),
        IndexUnavailable,
    ),
    "read timeout": (lambda: httpx.ReadTimeout("timed out", request=REQUEST), IndexUnavailable),
    "server went away mid-answer": (
        lambda: httpx.RemoteProtocolError("Server disconnected without sending a response.", request=REQUEST),
        IndexUnavailable,
    ),
    "pool timeout": (lambda: httpx.PoolTimeout("pool exhausted", request=REQUEST), IndexUnavailable),
    "HTTP 500 InternalError": (answer(500, "InternalError", "database is locked"), IndexUnavailable),
    "HTTP 429 RateLimitError": (answer(429, "RateLimitError", "slow down"), IndexUnavailable),
    "HTTP 502 page from a proxy": (
        lambda: chroma_answer(502, text="<html>Bad Gateway</html>"),
        IndexUnavailable,
    ),
    "HTTP 503 without a body": (lambda: chroma_answer(503), IndexUnavailable),
    "HTTP 400 wrong dimension": (
        answer(400, "InvalidArgumentError", "Collection expecting embedding with dimension of 384, got 5"),
        EventRejected,
    ),
    "HTTP 400 non-finite vector": (
        answer(400, "InvalidArgumentError", "Non-finite float value at embedding index 0: NaN"),
        EventRejected,
    ),
    "HTTP 400 duplicate ids": (answer(400, "DuplicateID", "Expected IDs to be unique"), EventRejected),
    "HTTP 413 payload too large": (lambda: chroma_answer(413, text="Payload too large"), EventRejected),
    "metadata chromadb refuses before sending": (metadata_error, EventRejected),
    "HTTP 404 collection deleted": (
        answer(404, "NotFoundError", "Collection [c] does not exist."),
        IndexMisconfigured,
    ),
    "HTTP 401": (answer(401, "AuthorizationError", "no token"), IndexMisconfigured),
    "HTTP 403": (answer(403, "AuthError", "Forbidden"), IndexMisconfigured),
    "unsupported scheme": (
        lambda: httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'htp://'."),
        IndexMisconfigured,
    ),
    "name not resolving (yet)": (
        lambda: socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        IndexUnavailable,
    ),
    "host unreachable": (lambda: OSError(errno.EHOSTUNREACH, "No route to host"), IndexUnavailable),
    "permission denied": (lambda: PermissionError(errno.EACCES, "Permission denied"), IndexMisconfigured),
}


KAFKA_CASES: dict[str, tuple[Callable[[], Exception], type[IndexingError]]] = {
    "no broker to bootstrap from": (
        lambda: KafkaConnectionError(
            "Unable to bootstrap from [('127.0.0.1', 9092, <AddressFamily.AF_INET: 2>)]"
        ),
        IndexUnavailable,
    ),
    "send timed out waiting for a broker": (KafkaTimeoutError, IndexUnavailable),
    "broker not available": (for_code(8), IndexUnavailable),
    "not the partition's leader": (for_code(6), IndexUnavailable),
    "request timed out": (for_code(7), IndexUnavailable),
    "not enough in-sync replicas": (for_code(19), IndexUnavailable),
    "unexpected broker error": (for_code(-1), IndexUnavailable),
    "replica not available": (for_code(9), IndexUnavailable),
    "connection reset": (
        lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        IndexUnavailable,
    ),
    "record too large for the broker": (for_code(10), EventRejected),
    "record too large for the producer": (
        lambda: RecordTooLargeError("The message is 12582912 bytes when serialized"),
        EventRejected,
    ),
    "topic authorization failed": (for_code(29), IndexMisconfigured),
    "fenced producer": (ProducerFenced, IndexMisconfigured),
    "producer already closed": (ProducerClosed, IndexMisconfigured),
    "file not found": (
        lambda: FileNotFoundError(errno.ENOENT, "No such file or directory"),
        IndexMisconfigured,
    ),
}


#: Each case through the wrapper of the client that raises it.
CASES = [(chroma_calls, case, *CHROMA_CASES[case]) for case in CHROMA_CASES] + [
    (kafka_calls, case, *KAFKA_CASES[case]) for case in KAFKA_CASES
]


@pytest.mark.parametrize(
    ("wrap", "case", "make", "decision"),
    CASES,
    ids=[f"{wrap.__name__.removesuffix('_calls')}: {case}" for wrap, case, _, _ in CASES],
)
def test_each_failure_decides_as_the_table_says(
    wrap: Callable[[str], AbstractContextManager[None]],
    case: str,
    make: Callable[[], Exception],
    decision: type[IndexingError],
) -> None:
    error = make()

    with pytest.raises(IndexingError) as caught, wrap("writing the batch"):
        raise error

    assert type(caught.value) is decision
    assert caught.value.retriable is (decision is IndexUnavailable)
    assert caught.value.__cause__ is error
    assert "writing the batch" in str(caught.value)


def test_a_kafka_error_that_streams_classified_keeps_its_decision_and_message() -> None:
    with pytest.raises(IndexUnavailable) as caught, kafka_calls("dead-lettering refused events"):
        raise BrokerUnavailable("sending 1 dead letter(s) to docs.dlq: KafkaTimeoutError")

    assert str(caught.value) == "sending 1 dead letter(s) to docs.dlq: KafkaTimeoutError"


async def test_chroma_that_nobody_listens_for_is_unavailable() -> None:
    port = free_port()
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(IndexUnavailable, match="Chroma did not answer"), chroma_calls("reading chunks"):
            await client.get(f"http://127.0.0.1:{port}/api/v2/heartbeat")


@pytest.mark.parametrize(
    "error",
    [
        ValueError("text contains no tokens"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory"),
        Exception("TextInputSequence must be str"),  # the tokenizer raises bare Exceptions
    ],
    ids=["ValueError", "RuntimeError", "Exception"],
)
def test_what_our_code_or_the_model_raise_on_the_events_rejects_them(error: Exception) -> None:
    with pytest.raises(EventRejected) as caught, event_data_errors("planning a batch"):
        raise error

    assert caught.value.error_class == type(error).__name__
    assert str(error) in str(caught.value) and "planning a batch" in str(caught.value)


def test_a_rejection_names_the_class_of_the_error_behind_it_for_the_dead_letter() -> None:
    refused = chroma_answer(400, {"error": "InvalidArgumentError", "message": "Non-finite float value"})
    with pytest.raises(EventRejected) as caught, chroma_calls("writing the batch's chunks to Chroma"):
        raise refused

    assert caught.value.error_class == "InvalidArgumentError"


@pytest.mark.parametrize("wrap", [chroma_calls, kafka_calls, event_data_errors])
def test_an_indexing_error_passes_every_wrapper_unchanged(
    wrap: Callable[[str], AbstractContextManager[None]],
) -> None:
    unavailable = IndexUnavailable("Chroma did not answer")
    with pytest.raises(IndexUnavailable) as caught, wrap("anything"):
        raise unavailable

    assert caught.value is unavailable


def test_kafka_calls_leave_errors_of_other_kinds_to_the_caller() -> None:
    with pytest.raises(ValueError, match="not a Kafka error"), kafka_calls("sending"):
        raise ValueError("not a Kafka error")
