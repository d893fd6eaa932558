"""The query model's ONNX graphs cached on disk: a second start loads them without torch and embeds
exactly as the first; a damaged entry, or one that no longer embeds like torch, is traced again."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.onnx_embedder import OnnxEmbedder

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "painting about the bombing of a Basque town",
    "a",
    "Guernica is a large 1937 oil painting by Spanish artist Pablo Picasso. " * 20,  # past 256 tokens
    "Ünïcödé, emoji 🙂 and 数字 123",
]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A cache written by a first start (int8-blockwise: both graphs), and that start's vectors."""
    cache = tmp_path_factory.mktemp("query-models")
    return cache, OnnxEmbedder(MODEL, precision="int8-blockwise", cache_dir=cache).encode(TEXTS)


def entry_of(cache: Path) -> Path:
    (entry,) = [path for path in cache.iterdir() if not path.name.startswith(".")]
    return entry


def test_a_second_start_loads_the_cached_graphs_without_torch_and_embeds_alike(traced) -> None:
    cache, first = traced
    code = (
        "import sys, json; from pathlib import Path; from engines.onnx_embedder import OnnxEmbedder; "
        f"m = OnnxEmbedder({MODEL!r}, precision='int8-blockwise', cache_dir=Path({str(cache)!r})); "
        f"print(json.dumps({{'torch': 'torch' in sys.modules, 'vectors': m.encode({TEXTS!r}).tolist()}}))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    again = json.loads(run.stdout.strip().splitlines()[-1])

    assert again["torch"] is False, "a cached start imported torch"
    assert np.allclose(np.asarray(again["vectors"], dtype=np.float32), first, atol=1e-6)


def test_a_corrupt_graph_is_traced_again_and_the_entry_rewritten(traced) -> None:
    cache, first = traced
    graph = entry_of(cache) / "main.onnx"
    damaged = bytearray(graph.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    graph.write_bytes(bytes(damaged))

    vectors = OnnxEmbedder(MODEL, precision="int8-blockwise", cache_dir=cache).encode(TEXTS)

    assert np.allclose(vectors, first, atol=1e-6)
    # Rewritten whole: the next start finds a sound entry again.
    reloaded = OnnxEmbedder(MODEL, precision="int8-blockwise", cache_dir=cache)
    assert np.allclose(reloaded.encode(TEXTS), first, atol=1e-6)
    meta = json.loads((entry_of(cache) / "meta.json").read_text())
    assert hashlib.sha256((entry_of(cache) / "main.onnx").read_bytes()).hexdigest() == meta["main_sha256"]


def test_an_entry_that_no_longer_embeds_like_torch_is_dropped_and_traced_again(traced, caplog) -> None:
    cache, first = traced
    meta_file = entry_of(cache) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["expected"] = (-np.asarray(meta["expected"])).tolist()  # what torch "said" is now the opposite
    meta_file.write_text(json.dumps(meta))

    vectors = OnnxEmbedder(MODEL, precision="int8-blockwise", cache_dir=cache).encode(TEXTS)

    assert "embeds unlike torch" in caplog.text
    assert np.allclose(vectors, first, atol=1e-6)
    assert json.loads((entry_of(cache) / "meta.json").read_text())["expected"] != meta["expected"]


def test_each_precision_has_an_entry_of_its_own(traced) -> None:
    cache, _ = traced
    OnnxEmbedder(MODEL, precision="fp32", cache_dir=cache)
    assert len([path for path in cache.iterdir() if not path.name.startswith(".")]) == 2


def test_a_cache_folder_that_cannot_be_written_costs_only_time(tmp_path: Path, caplog) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")

    vectors = OnnxEmbedder(MODEL, cache_dir=blocked / "query-models").encode(TEXTS[:2])

    assert vectors.shape == (2, 384)
    assert "not cached" in caplog.text
