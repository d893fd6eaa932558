"""The query model's ONNX graphs on disk, so that a process starting again skips torch entirely.

Tracing a sentence-transformers model to ONNX needs torch and sentence-transformers: ~7 s of
imports and ~2 s of tracing and quantising, on every start of every API replica, and under load
several times that (a replica replacing a dead one competes for the cores with the survivor).
The graphs only change with the model and the libraries, so the first process writes them here
and the next ones load them with ONNX Runtime and the tokenizer alone.

An entry is a folder named by a key over the model's files and every library version that shapes
the graphs; it holds the graphs, their checksums and the vectors torch gave the check sentences,
which the loader compares its own with before it serves (see ``OnnxEmbedder``). A corrupt or
partial entry reads as absent; entries are written whole (a temporary folder renamed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["QueryGraphs", "forget_graphs", "graph_key", "load_graphs", "save_graphs"]

#: Changes when what an entry holds changes.
_FORMAT = 1
_LIBRARIES = ("onnxruntime", "onnx", "torch", "transformers", "sentence-transformers", "tokenizers")


@dataclass(frozen=True)
class QueryGraphs:
    """What ``OnnxEmbedder`` needs besides the tokenizer."""

    #: The graph for every call (fp32, or int8 per channel).
    main: bytes
    #: The block-wise int8 graph for calls of a few tokens, if the precision has one.
    small: bytes | None
    input_names: list[str]
    max_length: int
    #: The torch model's unit vectors of the check sentences, one row each.
    expected: np.ndarray


def graph_key(model_path: str, settings: dict[str, object]) -> str:
    """A name for the graphs of the model at ``model_path`` made with ``settings``: it changes
    with any file of the model, any library version involved, or any setting."""
    root = Path(model_path)
    files = sorted(
        (str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file()
    )
    versions: dict[str, str | None] = {}
    for library in _LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = None
    described = {"format": _FORMAT, "model": str(root.resolve()), "files": files, "versions": versions}
    text = json.dumps(described | {"settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_graphs(folder: Path, key: str) -> QueryGraphs | None:
    """The entry ``key`` under ``folder``; None when there is none or it does not check out."""
    entry = folder / key
    try:
        meta = json.loads((entry / "meta.json").read_text())
        main = (entry / "main.onnx").read_bytes()
        small = (entry / "small.onnx").read_bytes() if meta["small_sha256"] else None
        damaged = _sha256(main) != meta["main_sha256"]
        damaged = damaged or (small is not None and _sha256(small) != meta["small_sha256"])
        if damaged:
            log.warning("query model cache entry %s is corrupt (checksums differ): tracing again", entry)
            forget_graphs(folder, key)
            return None
        expected = np.asarray(meta["expected"], dtype=np.float32)
        return QueryGraphs(main, small, list(meta["input_names"]), int(meta["max_length"]), expected)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("query model cache entry %s is unreadable (%s): tracing the model again", entry, exc)
        forget_graphs(folder, key)
        return None


def save_graphs(folder: Path, key: str, graphs: QueryGraphs) -> None:
    """Write the entry whole; a folder that cannot be written costs only the next start's time."""
    meta = {
        "main_sha256": _sha256(graphs.main),
        "small_sha256": _sha256(graphs.small) if graphs.small is not None else None,
        "input_names": graphs.input_names,
        "max_length": graphs.max_length,
        "expected": graphs.expected.tolist(),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder))
        (staging / "main.onnx").write_bytes(graphs.main)
        if graphs.small is not None:
            (staging / "small.onnx").write_bytes(graphs.small)
        (staging / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(staging, folder / key)
        except OSError:
            # Another process wrote the same entry first: theirs stands.
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        log.warning("query model graphs not cached under %s (%s): the next start traces again", folder, exc)


def forget_graphs(folder: Path, key: str) -> None:
    """Remove an entry that cannot be used, so that a sound one can take its place."""
    shutil.rmtree(folder / key, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
