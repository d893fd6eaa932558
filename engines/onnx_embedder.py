"""The same sentence-transformers model, run by ONNX Runtime: for short texts one at a time.

A search embeds one short query per request. There torch spends most of its time dispatching
operators, not computing: all-MiniLM-L6-v2 takes ~10 ms for a 10-word query in torch and ~3 ms in
ONNX Runtime on one core, with the same vector (fp32 both). Long batches, the consumers' work,
are better served by torch in bf16, so ``Embedder`` stays theirs.

The whole sentence-transformers pipeline (transformer, pooling, any dense layer, normalisation)
is traced to ONNX when the process starts (about a second, after ~7 s of importing torch and
sentence-transformers; nothing is downloaded), and checked against torch on sample sentences
before it is used. Given a cache folder, the graphs and torch's vectors of those sentences are
kept there (``engines.onnx_cache``): the next start loads them with ONNX Runtime and the
``tokenizers`` library alone, checks them against the kept vectors, and never imports torch.

On request its weights are quantised to int8: one short query then reads a quarter of the bytes.
Two ways:

- ``int8``: one scale per output channel, activations quantised per tensor (ONNX Runtime's
  dynamic quantisation). Fastest; cosine ~0.994 to fp32.
- ``int8-blockwise``: one scale per block of 16 weights, activations quantised per block
  (``MatMulNBits``), for calls of a few tokens only: cosine ~0.9998 to fp32. A short query
  alone spends its time reading the weights, so a quarter of the bytes makes it ~1.5x faster;
  with more tokens in a call arithmetic dominates, where ONNX Runtime's fp32 kernels beat its
  block-wise int8 ones, so bigger calls (several queries at once, under load) run in fp32.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines.embedder import resolve_model_path
from engines.onnx_cache import QueryGraphs, forget_graphs, graph_key, load_graphs, save_graphs

log = logging.getLogger(__name__)

__all__ = ["OnnxEmbedder", "OnnxExportError"]

#: Sentences the exported model must embed like torch does before it replaces torch.
_CHECK_SENTENCES = (
    "painting about the bombing of a Basque town",
    "A much longer sentence, with punctuation, numbers such as 1936 and 42, and several clauses, "
    "so that the check covers padding and attention over more than a handful of tokens.",
    "x",
)
#: Least cosine similarity between torch's and ONNX Runtime's vector for the same sentence, for
#: the graph as traced and for its weights quantised to int8.
_MIN_AGREEMENT = {"fp32": 0.9999, "int8-blockwise": 0.999, "int8": 0.98}
#: Weights per scale of ``int8-blockwise``: 16 kept cosine ≥ 0.9996 on sample queries where 128
#: fell to 0.9986, at the same speed.
_BLOCK = 16
#: Most tokens in a call (texts × padded length) that ``int8-blockwise`` runs in int8. On one
#: core: one query of 7–19 tokens took 3.1–6.2 ms against fp32's 6.6–8.2; two of 11, 7.3
#: against 8.4; four of 7 (28 tokens) as long as fp32, and four of 11 longer (13.6 against 12.3).
SMALL_CALL_TOKENS = 24


class OnnxExportError(Exception):
    """The model could not be traced to ONNX, or the traced model embeds differently from torch."""


class OnnxEmbedder:
    """``encode`` returns L2-normalised float32 vectors, like ``Embedder``, computed by ONNX Runtime."""

    def __init__(
        self,
        model: str,
        threads: int = 1,
        max_batch: int = 64,
        precision: str = "fp32",
        cache_dir: Path | None = None,
    ) -> None:
        """``cache_dir``: where the traced graphs are kept between starts (``engines.onnx_cache``);
        with an entry there, torch is not even imported."""
        if precision not in _MIN_AGREEMENT:
            raise ValueError(f"precision must be one of {sorted(_MIN_AGREEMENT)}, not {precision!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.batch_size = max_batch
        self.precision = precision
        path = resolve_model_path(model)
        key = graph_key(path, {"precision": precision, "block": _BLOCK}) if cache_dir is not None else ""
        graphs = load_graphs(cache_dir, key) if cache_dir is not None else None
        if graphs is not None and (Path(path) / "tokenizer.json").is_file():
            self._tokenizer = _file_tokenizer(path, graphs.max_length)
            agreement = self._use(graphs, threads)
            if agreement >= _MIN_AGREEMENT[precision]:
                self._report(model, threads, agreement, "cached graph")
                return
            assert cache_dir is not None
            log.warning(
                "the cached ONNX graph of %s embeds unlike torch (cosine %.5f): tracing again",
                model,
                agreement,
            )
            forget_graphs(cache_dir, key)
        graphs = self._trace(path, precision)
        agreement = self._use(graphs, threads)
        least = _MIN_AGREEMENT[precision]
        if agreement < least:
            raise OnnxExportError(
                f"{model} traced to ONNX ({precision}) embeds unlike torch (cosine {agreement:.5f} < {least})"
            )
        if cache_dir is not None:
            save_graphs(cache_dir, key, graphs)
        self._report(model, threads, agreement, "traced")

    def _trace(self, path: str, precision: str) -> QueryGraphs:
        """The model's graphs, traced from torch, and the vectors torch gives the check sentences;
        sets the tokenizer."""
        import torch
        from sentence_transformers import SentenceTransformer

        source = SentenceTransformer(path, device="cpu").eval()
        self._max_length = int(source.max_seq_length or 512)
        self._tokenizer = _library_tokenizer(source.tokenizer, self._max_length)
        sample = self._tokenizer(["probe"])
        input_names = [name for name in source.tokenizer.model_input_names if name in sample]
        graph = _export(source, input_names, sample, torch)
        expected = source.encode(
            list(_CHECK_SENTENCES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return QueryGraphs(
            main=_quantized(graph) if precision == "int8" else graph,
            small=_blockwise_quantized(graph) if precision == "int8-blockwise" else None,
            input_names=input_names,
            max_length=self._max_length,
            expected=np.asarray(expected, dtype=np.float32),
        )

    def _use(self, graphs: QueryGraphs, threads: int) -> float:
        """Open ONNX Runtime sessions on ``graphs``; the least cosine between their vectors of the
        check sentences and torch's."""
        import onnxruntime

        self._max_length = graphs.max_length
        self._input_names = graphs.input_names
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin waiting for work, taking CPU the rest of the
        # machine (Chroma, the consumers, the API's event loop) needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(weights: bytes) -> Any:
            return onnxruntime.InferenceSession(weights, options, providers=["CPUExecutionProvider"])

        self._session = session(graphs.main)
        #: ``int8-blockwise``'s graph, for calls of at most ``SMALL_CALL_TOKENS``; others use ``_session``.
        self._small_calls = session(graphs.small) if graphs.small is not None else None
        self._output = self._session.get_outputs()[0].name
        expected = graphs.expected
        self.dimension = int(expected.shape[1])
        # Together, so that padding is covered; then each graph in use, one sentence a call, as
        # a short query is embedded.
        agreement = float(np.min(np.sum(expected * self.encode(list(_CHECK_SENTENCES)), axis=1)))
        for graph_in_use in (self._session, self._small_calls):
            if graph_in_use is not None:
                for sentence, vector in zip(_CHECK_SENTENCES, expected, strict=True):
                    got = self._run(graph_in_use, self._tokenizer([sentence]))[0]
                    agreement = min(agreement, float(vector @ (got / np.linalg.norm(got))))
        return agreement

    def _report(self, model: str, threads: int, agreement: float, origin: str) -> None:
        log.info(
            "query model %s running in ONNX Runtime (%s, %s, %d thread(s), dim %d; cosine to torch ≥ %.4f)",
            model, origin, self.precision, threads, self.dimension, agreement,
        )  # fmt: skip

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = []
        # Sorted by length so that a batch pads to its own longest text, not the longest of all.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), self.batch_size):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            features = self._tokenizer(batch)
            small = self._small_calls is not None and features["input_ids"].size <= SMALL_CALL_TOKENS
            parts.append(self._run(self._small_calls if small else self._session, features))
        stacked = np.concatenate(parts).astype(np.float32, copy=False)
        result = np.empty_like(stacked)
        result[order] = stacked
        # The traced pipeline normalises only if the model's own pipeline does; searches need unit vectors.
        norms = np.linalg.norm(result, axis=1, keepdims=True)
        return result / np.maximum(norms, 1e-12)

    def _run(self, session: Any, features: dict[str, np.ndarray]) -> np.ndarray:
        (vectors,) = session.run([self._output], {name: features[name] for name in self._input_names})
        return np.asarray(vectors)


Tokenize = Callable[[list[str]], dict[str, np.ndarray]]


def _library_tokenizer(tokenizer: Any, max_length: int) -> Tokenize:
    """The model's tokenizer as sentence-transformers loaded it: padded to the longest text of a
    call, truncated at the model's ``max_length``."""

    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}

    return tokenize


def _file_tokenizer(model_path: str, max_length: int) -> Tokenize:
    """The model's ``tokenizer.json`` run by the ``tokenizers`` library alone (transformers'
    tokenizer classes import torch), padded and truncated as ``_library_tokenizer`` does; the
    agreement check on a cached graph would catch any difference."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    padding = tokenizer.padding or {}
    pad_token = padding.get("pad_token", "[PAD]")
    pad_id = padding.get("pad_id", tokenizer.token_to_id(pad_token) or 0)
    # Padded to the longest text of each call (the file may fix a length), truncated at the model's.
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, pad_type_id=padding.get("pad_type_id", 0))
    tokenizer.enable_truncation(max_length)

    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    return tokenize


def _quantized(graph: bytes) -> bytes:
    """The graph with its weights in int8, one scale per output channel, activations quantised on
    the fly. A short query's time goes mostly to reading the weights: a quarter of the bytes."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser writes its result to a file; it lives only for this call.
    with tempfile.TemporaryDirectory(prefix="ragstream-onnx-") as folder:
        target = os.path.join(folder, "model.int8.onnx")
        quantize_dynamic(onnx.load_from_string(graph), target, per_channel=True, weight_type=QuantType.QInt8)
        with open(target, "rb") as quantized:
            return quantized.read()


def _blockwise_quantized(graph: bytes) -> bytes:
    """The graph with each MatMul's weights in int8, a scale per ``_BLOCK`` of them, and its
    activations quantised per block too (``accuracy_level`` 4): int8 arithmetic whose rounding
    stays local, so the vectors keep to fp32's far more closely than one scale per channel does."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load_from_string(graph), bits=8, block_size=_BLOCK, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    buffer = io.BytesIO()
    onnx.save_model(quantizer.model.model, buffer)
    return buffer.getvalue()


def _export(source: Any, input_names: list[str], sample: dict[str, np.ndarray], torch: Any) -> bytes:
    """The sentence-transformers pipeline as an ONNX graph, batch and sequence length dynamic."""

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.source = source

        def forward(self, *inputs: Any) -> Any:
            return self.source(dict(zip(input_names, inputs, strict=True)))["sentence_embedding"]

    axes = {name: {0: "batch", 1: "tokens"} for name in input_names}
    axes["embedding"] = {0: "batch"}
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns where the model branches on shapes (SDPA's causal test, pooling's
            # mask check); both branches are the same for every input here, and the agreement
            # check after the export would catch a graph that generalised wrongly.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pipeline().eval(),
                tuple(torch.from_numpy(sample[name]) for name in input_names),
                buffer,
                input_names=input_names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=17,
                # The TorchScript tracer: it needs no onnxscript and handles every BERT-like model.
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many kinds; any of them means "use torch"
        raise OnnxExportError(f"could not trace the model to ONNX: {type(exc).__name__}: {exc}") from exc
    return buffer.getvalue()
