"""The one log schema: a JSON object a line with the schema's fields, for structlog's loggers and
the standard library's alike."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from schemas.logs import bound_log_context, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_a_standard_library_record_is_one_json_line_with_the_schema(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("consumer", "json")
    with bound_log_context(event_id="e-1", doc_id="wiki/Guernica", partition=3, offset=41):
        logging.getLogger("consumers.consumer").info("indexed %d chunks", 5)

    (line,) = _lines(capsys.readouterr().err)
    assert line["message"] == "indexed 5 chunks"
    assert line["level"] == "info"
    assert line["component"] == "consumer"
    assert line["logger"] == "consumers.consumer"
    assert (line["event_id"], line["doc_id"], line["partition"], line["offset"]) == (
        "e-1",
        "wiki/Guernica",
        3,
        41,
    )
    assert line["timestamp"].endswith("Z")
    assert list(line)[:5] == ["timestamp", "level", "component", "logger", "message"]


def test_a_structlog_record_and_a_librarys_have_the_same_fields(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("api", "json")
    with bound_log_context(request_id="r-9"):
        structlog.get_logger("query_api.search").info("searched", hits=3)
        logging.getLogger("uvicorn.error").warning("slow client")

    ours, uvicorns = _lines(capsys.readouterr().err)
    for line in (ours, uvicorns):
        assert {"timestamp", "level", "component", "logger", "message", "request_id"} <= set(line)
        assert line["component"] == "api"
        assert line["request_id"] == "r-9"
    assert ours["hits"] == 3
    assert uvicorns["logger"] == "uvicorn.error"


def test_context_ends_with_its_block(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("stage", "json")
    with bound_log_context(doc_id="a"):
        pass
    logging.getLogger("streams").warning("after")

    (line,) = _lines(capsys.readouterr().err)
    assert "doc_id" not in line


def test_an_exception_is_a_field_of_its_line(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("stage", "json")
    try:
        raise ValueError("bad event")  # noqa: TRY301 (a logged exception needs a live traceback)
    except ValueError:
        logging.getLogger("streams").exception("handling failed")

    (line,) = _lines(capsys.readouterr().err)
    assert "ValueError: bad event" in line["exception"]


def test_text_lines_carry_the_same_fields_readably(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("consumer", "text")
    with bound_log_context(doc_id="wiki/Guernica", offset=41):
        logging.getLogger("consumers.consumer").warning("slow batch")

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "slow batch" in err and "doc_id=wiki/Guernica" in err and "offset=41" in err
    assert "component=consumer" in err


def test_configuring_again_replaces_the_handler_and_keeps_others(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("cli", "text")
    configure_logging("cli", "json")
    logging.getLogger("x").warning("once")

    assert len(_lines(capsys.readouterr().err)) == 1


def test_a_level_below_the_configured_one_is_left_out(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("cli", "json", logging.WARNING)
    logging.getLogger("aiokafka").info("connected")
    structlog.get_logger("ragstream").info("quiet")

    assert capsys.readouterr().err == ""
