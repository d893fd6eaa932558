"""What every evaluation report shares: the settings it ran with, and where its JSON goes."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas import Settings

__all__ = ["new_run_id", "save_json", "settings_summary"]

_SUMMARY_KEYS = (
    "model",
    "precision",
    "chunk_size",
    "chunk_overlap",
    "hybrid_fusion",
    "hybrid_vector_prior",
    "hybrid_vector_weight",
    "hybrid_lexical_weight",
    "hybrid_candidates",
    "rrf_k",
    "rerank_model",
    "rerank_depth",
    "partitions",
)


def settings_summary(settings: Settings) -> dict[str, Any]:
    """The settings that change retrieval results, recorded with each report."""
    return {key: getattr(settings, key) for key in _SUMMARY_KEYS}


def save_json(payload: dict[str, Any], results_dir: Path, name: str) -> Path:
    """Write ``payload`` as ``results_dir/name.json``; returns the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def new_run_id(started_at: datetime) -> str:
    """Sortable by time, unique across runs started in the same second."""
    return started_at.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
