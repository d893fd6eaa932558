"""Reranking: reorder the top hits with a model that reads the query and each passage together.

Retrievers score the query and a chunk independently (vectors, term statistics); a cross-encoder
reads both at once, which is slower but usually orders the first page better. One interface, so
that the search code and a test double share a contract.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Protocol

from query_api.models import SearchHit
from schemas.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["CrossEncoderReranker", "Reranker", "RerankerUnavailable", "load_reranker"]


class RerankerUnavailable(Exception):
    """The configured reranker cannot be used; ``reason`` says why."""

    def __init__(self, model: str | None, reason: str) -> None:
        super().__init__(f"reranker {model!r} is unavailable: {reason}" if model else reason)
        self.model = model
        self.reason = reason


class Reranker(Protocol):
    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        """The same hits, best first, each with ``rerank_score`` (and ``score``) set."""
        ...


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` from a local path (or a name in the local cache)."""

    def __init__(self, model: str, batch_size: int = 32) -> None:
        # As for the embedder: a missing model must fail here, never start a download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        self.model = model
        self._batch_size = batch_size
        try:
            self._encoder = CrossEncoder(model, device="cpu")
        except Exception as exc:
            raise RerankerUnavailable(model, f"{type(exc).__name__}: {exc}") from exc
        log.info("reranker %s loaded", model)

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        if not hits:
            return []
        scores = self._encoder.predict(
            [(query, hit.text) for hit in hits], batch_size=self._batch_size, show_progress_bar=False
        )
        return rescored(hits, [float(score) for score in scores])


def rescored(hits: Sequence[SearchHit], scores: Sequence[float]) -> list[SearchHit]:
    """``hits`` with these reranker scores, best first; equal scores keep their earlier order."""
    updated = [
        hit.model_copy(update={"rerank_score": score, "score": score})
        for hit, score in zip(hits, scores, strict=True)
    ]
    return sorted(updated, key=lambda hit: -(hit.rerank_score or 0.0))


def load_reranker(settings: Settings) -> Reranker | None:
    """The configured reranker, loaded; None when none is configured and reranking is off."""
    if settings.rerank_model is None:
        if settings.rerank:
            raise RerankerUnavailable(
                None, "reranking is on by default (RAGSTREAM_RERANK) but RAGSTREAM_RERANK_MODEL is not set"
            )
        return None
    return CrossEncoderReranker(settings.rerank_model)
