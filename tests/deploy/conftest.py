"""Debian's promtool for the rule and dashboard tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_files import prometheus_tool


@pytest.fixture(scope="session")
def promtool() -> Path:
    return prometheus_tool("promtool")
