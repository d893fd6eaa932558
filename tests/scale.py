"""Sizes of the long-running scenarios: small by default, bigger with ``pytest --long``."""

from __future__ import annotations

import os

import pytest

__all__ = ["LONG", "scaled", "scaled_timeout"]

#: Set by ``pytest --long`` (see tests/conftest.py), or by RAGSTREAM_LONG_TESTS=1.
LONG = os.environ.get("RAGSTREAM_LONG_TESTS") == "1"


def scaled(default: int, long: int) -> int:
    """``long`` under ``--long``, else ``default``."""
    return long if LONG else default


def scaled_timeout() -> pytest.MarkDecorator:
    """The per-test time limit: the project's 600 s, or an hour for the long versions."""
    return pytest.mark.timeout(scaled(600, 3600))
