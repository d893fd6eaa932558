"""What a test does when something it needs is missing on this machine."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["skip_or_fail"]


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test where a developer lacks the tool or service; under CI=true fail it instead:
    CI must never pass by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
