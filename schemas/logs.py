"""One log schema for every ragstream process (the stage, the consumers, the API, the CLI).

``configure_logging`` is called once at each process's entry point: the CLI's commands, a
consumer actor's ``__init__`` (a Ray worker process), an API replica's ``__init__`` (a Serve
replica process), a stage worker (through faust's ``logging_config``, see ``logging_config``).
It lives here because every one of those processes imports ``schemas`` for its settings.

A line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``component``, ``logger``, ``message``
and whichever of ``event_id``, ``doc_id``, ``partition``, ``offset``, ``request_id`` are bound
(``bound_log_context``) where it is written; ``exception`` when it has one. ``json`` writes one
JSON object a line; ``text`` the same fields readable, coloured on a terminal.

Our modules keep ``logging.getLogger(__name__)``: the standard library's records, and those of
Ray, uvicorn, aiokafka and faust, go through structlog's ``ProcessorFormatter`` with the same
processors as structlog's own loggers, so every line has the one schema.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "CONTEXT_FIELDS",
    "LogFormat",
    "bound_log_context",
    "configure_logging",
    "logging_config",
]

LogFormat = Literal["text", "json"]

#: The context fields a line may carry, bound per event (stage, consumers) or per request (API).
CONTEXT_FIELDS = ("event_id", "doc_id", "partition", "offset", "request_id")

#: Libraries whose loggers install handlers of their own and stop propagating: routed to the
#: root handler instead, so that their lines have the schema too.
_ROUTED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "ray",
    "ray.serve",
    "ray.data",
    "faust",
    "mode",
)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record: faust redirects it, and a
    test runner swaps it for each command it runs, then closes the one it swapped in."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def _add_component(component: str) -> Processor:
    def add(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("component", component)
        return event_dict

    return add


def _add_logger_name(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
    elif isinstance(logger, logging.Logger):
        event_dict.setdefault("logger", logger.name)
    return event_dict


def _drop_private_extras(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # Ray adds its own bookkeeping (``_ray_timestamp_ns``) to the records of its workers.
    for key in [key for key in event_dict if key.startswith("_") and key not in _PROCESSOR_META]:
        del event_dict[key]
    return event_dict


#: What ProcessorFormatter itself keeps in the event dict until its last processors.
_PROCESSOR_META = frozenset({"_record", "_from_structlog"})


def _shared_processors(component: str) -> list[Processor]:
    """What every line goes through, structlog's or the standard library's."""
    return [
        # Context bound with bound_log_context reaches stdlib records too: it is a ContextVar.
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _add_logger_name,
        _add_component(component),
        # logging.info(..., extra={"doc_id": ...}) adds fields like bound context does.
        structlog.stdlib.ExtraAdder(),
        _drop_private_extras,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


#: The fields a reader looks for first lead every JSON line, in this order; the rest follow.
_LEADING_FIELDS = ("timestamp", "level", "component", "logger", "message", *CONTEXT_FIELDS)


def _schema_order(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    leading = {key: event_dict.pop(key) for key in _LEADING_FIELDS if key in event_dict}
    return {**leading, **event_dict}


def _formatter(component: str, log_format: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    renderer: Processor
    if log_format == "json":
        final: list[Processor] = [
            structlog.processors.format_exc_info,
            # "event" would read as a document event here; the line's text is its message.
            structlog.processors.EventRenamer("message"),
            _schema_order,
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=_is_terminal(sys.stderr), exception_formatter=structlog.dev.plain_traceback
        )
        final = [renderer]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(component),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_handler(component: str, log_format: LogFormat) -> logging.Handler:
    """The handler every record ends in (also built by ``logging.config`` for faust)."""
    handler = _CurrentStderrHandler()
    handler.setFormatter(_formatter(component, log_format))
    handler.set_name(f"ragstream-{component}")
    return handler


def logging_config(component: str, log_format: LogFormat, level: int | str = logging.INFO) -> dict[str, Any]:
    """The configuration as ``logging.config.dictConfig`` takes it: for a runner that configures
    logging itself (faust's worker clears the root handlers and applies the dict it is given)."""
    _configure_structlog(component)
    routed: dict[str, Any] = {name: {"handlers": [], "propagate": True} for name in _ROUTED_LOGGERS}
    return {
        "version": 1,
        # Loggers made at import (ours, aiokafka's) must keep working.
        "disable_existing_loggers": False,
        "handlers": {
            "ragstream": {"()": make_handler, "component": component, "log_format": log_format},
        },
        "root": {"level": level, "handlers": ["ragstream"]},
        "loggers": routed,
    }


def configure_logging(
    component: str, log_format: LogFormat = "text", level: int | str = logging.INFO
) -> None:
    """Send every log record of this process, structlog's and the standard library's, through the
    one schema to stderr. Safe to call again (the last call wins); handlers that others put on the
    root logger (a test runner's) stay."""
    _configure_structlog(component)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if (handler.get_name() or "").startswith("ragstream-"):
            root.removeHandler(handler)
    root.addHandler(make_handler(component, log_format))
    root.setLevel(level)
    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        for handler in list(routed.handlers):
            routed.removeHandler(handler)
        routed.propagate = True


def _configure_structlog(component: str) -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(component),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


@contextmanager
def bound_log_context(**fields: Any) -> Iterator[None]:
    """Every line logged in this block (in this task or thread, by any logger) carries ``fields``,
    e.g. ``event_id``, ``doc_id``, ``partition`` and ``offset`` while one event is handled."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield
