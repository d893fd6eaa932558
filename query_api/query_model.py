"""Which runtime embeds the API's queries: ONNX Runtime where the model traces, else torch."""

from __future__ import annotations

import logging
from pathlib import Path

from engines.embedder import Embedder
from engines.onnx_embedder import OnnxEmbedder, OnnxExportError
from query_api.query_embedding import TextEncoder
from schemas.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["load_query_model", "query_graph_cache"]


def query_graph_cache(settings: Settings) -> Path:
    """Where the API keeps its query model's ONNX graphs between starts (``engines.onnx_cache``)."""
    return settings.state_dir / "query-models"


def load_query_model(settings: Settings) -> TextEncoder:
    """The configured model, in ONNX Runtime unless ``query_runtime`` is torch or tracing fails.

    Both give the same vectors (checked when the ONNX graph is made, and again when a cached one
    is loaded), so the index the consumers built with torch is searched alike either way.
    """
    if settings.query_runtime == "onnx":
        try:
            return OnnxEmbedder(
                settings.model,
                threads=settings.query_threads,
                precision=settings.query_precision,
                cache_dir=query_graph_cache(settings),
            )
        except OnnxExportError as exc:
            log.warning("%s; queries are embedded by torch instead", exc)
    return Embedder(settings.model, settings.precision, settings.embed_batch_size, settings.query_threads)
