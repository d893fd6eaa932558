"""Bucketed shapes change nothing a search would see: the same vectors as a plain encode."""

import concurrent.futures

import numpy as np
import pytest

from engines.embedder import Embedder, tokenise_seconds

TEXTS = [
    "painting about the bombing of a Basque town",
    "a",
    "Guernica is a large 1937 oil painting by Spanish artist Pablo Picasso. " * 20,  # past 256 tokens
    "Ünïcödé, emoji 🙂 and 数字 123",
    *(f"sentence {n} " * n for n in range(1, 140, 3)),  # 47 lengths: two sub-batches, the last short
]


def plain_encode(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """sentence-transformers' own encode: each batch padded to its longest text."""
    vectors = embedder._model.encode(
        texts, batch_size=32, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False
    )
    widened = vectors.float().numpy()
    return widened / np.linalg.norm(widened, axis=1, keepdims=True)


@pytest.fixture(scope="module", params=["bf16", "fp32"])
def embedder(request) -> Embedder:
    return Embedder(precision=request.param)


def test_bucketed_vectors_equal_plain_encode_vectors(embedder: Embedder):
    bucketed = embedder.encode(TEXTS)
    assert bucketed.shape == (len(TEXTS), 384) and bucketed.dtype == np.float32
    cosines = np.sum(bucketed * plain_encode(embedder, TEXTS), axis=1)
    assert cosines.min() >= (0.999 if embedder.precision == "bf16" else 0.99999), cosines


def test_a_text_gets_the_same_vector_alone_as_in_a_padded_batch(embedder: Embedder):
    together = embedder.encode(TEXTS)
    for index in (0, 2, 5):
        alone = embedder.encode([TEXTS[index]])[0]
        assert float(alone @ together[index]) >= 0.999


def test_vectors_are_unit_length_and_empty_input_gives_none(embedder: Embedder):
    assert np.allclose(np.linalg.norm(embedder.encode(TEXTS), axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_tokenising_time_is_counted(embedder: Embedder):
    before = tokenise_seconds()
    embedder.encode(TEXTS)
    assert tokenise_seconds() > before


def test_a_changed_thread_count_applies_in_the_thread_that_encodes() -> None:
    # OpenMP keeps the count per thread: what matters is the thread that runs the kernels.
    import torch

    embedder_for_threads = Embedder(torch_threads=1)

    def encode_and_count() -> int:
        embedder_for_threads.encode(["one short text"])
        return torch.get_num_threads()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        embedder_for_threads.threads = 1
        assert worker.submit(encode_and_count).result() == 1
        embedder_for_threads.threads = 2
        assert worker.submit(encode_and_count).result() == 2
