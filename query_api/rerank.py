"""Reranking: reorder the top hits with a second, costlier model of relevance.

Retrievers score the query and a chunk independently (vectors, term statistics); a cross-encoder
reads both at once, which is slower but usually orders the first page better. Any
sentence-transformers ``CrossEncoder`` can be configured by path; ``nanoranker`` (an ONNX model
shipped in its PyPI package, so it runs offline) is the one that needs nothing downloaded. One
interface, so that the search code and a test double share a contract.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from query_api.models import SearchHit
from schemas.settings import Settings

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

__all__ = [
    "NANORANKER",
    "CrossEncoderReranker",
    "NanoRanker",
    "Reranker",
    "RerankerUnavailable",
    "load_reranker",
]

#: The ``rerank_model`` value that selects :class:`NanoRanker` rather than a CrossEncoder path.
NANORANKER = "nanoranker"


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


class NanoRanker:
    """nanoranker's reranker: a small ONNX net scoring the query's and the passage's embeddings.

    It is not a cross-encoder: query and passage are embedded apart (multilingual Universal
    Sentence Encoder plus a 64-feature hashed character n-gram vector), and the net scores the
    pair. Its own ``rank()`` returns texts, not positions, and texts may repeat, so the embeddings
    and the scoring net are called here and the scores kept in the hits' order.
    """

    model = NANORANKER

    def __init__(self, passage_cache_size: int = 4096) -> None:
        try:
            # Imported here: the import loads both ONNX models (about 125 MB), which only a
            # configured reranker should pay for.
            import nanoranker
        except Exception as exc:
            raise RerankerUnavailable(NANORANKER, f"{type(exc).__name__}: {exc}") from exc
        from query_api._ngram_hashing import textual_embedding

        self._models = nanoranker
        # nanoranker's own n-gram hashing is a pure-Python loop; this one gives the same vector.
        self._textual = textual_embedding
        # Popular passages come back query after query; their embeddings are kept.
        self._passage = functools.lru_cache(maxsize=passage_cache_size)(self._embed)
        log.info("reranker %s loaded", NANORANKER)

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        if not hits:
            return []
        import numpy as np

        passages = np.stack([self._passage(hit.text) for hit in hits])
        pairs = np.concatenate([np.tile(self._embed(query), (len(hits), 1)), passages], axis=1)
        scores = self._models.reranker_model.run(["output"], {"input": pairs.astype(np.float32)})[0]
        return rescored(hits, [float(score) for score in scores.reshape(-1)])

    def _embed(self, text: str) -> NDArray[Any]:
        import numpy as np

        # One text a call: the encoder pads a batch, which shifts each text's embedding a little.
        semantic = self._models.embedding_model.run(["outputs"], {"inputs": [text]})[0][0]
        return np.concatenate([semantic, self._textual(text)])


def rescored(hits: Sequence[SearchHit], scores: Sequence[float]) -> list[SearchHit]:
    """``hits`` with these reranker scores, best first; equal scores keep their earlier order."""
    updated = [
        hit.model_copy(update={"rerank_score": score, "score": score})
        for hit, score in zip(hits, scores, strict=True)
    ]
    return sorted(updated, key=lambda hit: -(hit.rerank_score or 0.0))


def load_reranker(settings: Settings) -> Reranker | None:
    """The configured reranker, loaded: ``rerank_model`` is ``nanoranker`` or a CrossEncoder path.

    With no model named, none is loaded, unless reranking is on by default: then nanoranker, which
    needs nothing downloaded."""
    model = settings.rerank_model
    if model is None and not settings.rerank:
        return None
    if model is None or model == NANORANKER:
        return NanoRanker()
    return CrossEncoderReranker(model)
