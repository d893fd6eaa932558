"""Fixtures for the query API tests: the embedding model, loaded once per session."""

from __future__ import annotations

import pytest

from consumers.embedder import Embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """all-MiniLM-L6-v2 from its installed package; loading takes a few seconds."""
    return Embedder()
