"""Debian's Prometheus tools for the rule, dashboard and scrape tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def prometheus_tool(name: str) -> Path:
    """The path of ``promtool`` or ``prometheus``; skips without it, or fails under CI=true."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    reason = f"{name} is missing: apt-get install prometheus (make test installs it as root)"
    # CI must never pass by skipping.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return prometheus_tool("promtool")
