"""The ONNX Runtime query model must embed exactly as the torch model the index was built with."""

import numpy as np
import pytest

from engines.embedder import Embedder
from engines.onnx_embedder import SMALL_CALL_TOKENS, OnnxEmbedder
from query_api.query_model import load_query_model
from schemas.settings import Settings

TEXTS = [
    "painting about the bombing of a Basque town",
    "city in northern Italy",
    "a",
    "Guernica is a large 1937 oil painting by Spanish artist Pablo Picasso. " * 20,  # past 256 tokens
    "Ünïcödé, emoji 🙂 and 数字 123",
]


@pytest.fixture(scope="module")
def onnx_model() -> OnnxEmbedder:
    return OnnxEmbedder("all-MiniLM-L6-v2")


def test_onnx_vectors_equal_torch_fp32_vectors(onnx_model: OnnxEmbedder):
    torch_vectors = Embedder(precision="fp32").encode(TEXTS)
    onnx_vectors = onnx_model.encode(TEXTS)
    assert onnx_vectors.shape == (len(TEXTS), 384) and onnx_vectors.dtype == np.float32
    cosines = np.sum(torch_vectors * onnx_vectors, axis=1)
    assert cosines.min() > 0.9999, cosines


def test_a_batch_gives_each_text_the_vector_it_gets_alone(onnx_model: OnnxEmbedder):
    together = onnx_model.encode(TEXTS)
    for index, text in enumerate(TEXTS):
        alone = onnx_model.encode([text])[0]
        assert float(alone @ together[index]) > 0.9999, text


def test_vectors_are_unit_length_and_empty_input_gives_none(onnx_model: OnnxEmbedder):
    assert np.allclose(np.linalg.norm(onnx_model.encode(TEXTS), axis=1), 1.0, atol=1e-5)
    assert onnx_model.encode([]).shape == (0, 384)


def test_the_api_uses_onnx_by_default_and_torch_when_configured():
    default = load_query_model(Settings())
    assert isinstance(default, OnnxEmbedder) and default.precision == "int8-blockwise"
    assert isinstance(load_query_model(Settings(query_runtime="torch")), Embedder)


def test_int8_weights_keep_each_vector_close_to_torch_and_the_ranking_of_passages():
    int8 = OnnxEmbedder("all-MiniLM-L6-v2", precision="int8")
    assert int8.precision == "int8"
    torch_model = Embedder(precision="fp32")
    cosines = np.sum(torch_model.encode(TEXTS) * int8.encode(TEXTS), axis=1)
    assert cosines.min() > 0.98, cosines
    passages = [
        "Guernica is a 1937 painting by Pablo Picasso about the bombing of the Basque town of Guernica.",
        "Turin is a city in northern Italy, the capital of Piedmont.",
        "The sunflower is a species of flowering plant in the family Asteraceae.",
    ]
    stored = torch_model.encode(passages)
    queries = [
        "painting about the bombing of a Basque town",
        "city in northern Italy",
        "flowering plant species",
    ]
    # The passage each query should find is still its nearest, with int8 queries against fp32 passages.
    assert list(np.argmax(int8.encode(queries) @ stored.T, axis=1)) == [0, 1, 2]


QUERIES = ["painting about the bombing of a Basque town", "city in northern Italy", "a", "Ünïcödé 123"]


def test_blockwise_int8_embeds_a_short_query_nearly_as_fp32_and_closer_than_per_channel_int8():
    blockwise = OnnxEmbedder("all-MiniLM-L6-v2", precision="int8-blockwise")
    per_channel = OnnxEmbedder("all-MiniLM-L6-v2", precision="int8")
    expected = Embedder(precision="fp32").encode(QUERIES)

    # One query a call, as the API embeds a search's query when no other is waiting.
    blockwise_cosines = np.array(
        [
            float(blockwise.encode([query])[0] @ vector)
            for query, vector in zip(QUERIES, expected, strict=True)
        ]
    )
    per_channel_cosines = np.sum(expected * per_channel.encode(QUERIES), axis=1)

    assert blockwise.precision == "int8-blockwise"
    assert blockwise_cosines.min() > 0.999, blockwise_cosines
    assert np.all(1 - blockwise_cosines < 1 - per_channel_cosines), (blockwise_cosines, per_channel_cosines)
    # Not fp32 in disguise: the int8 graph did answer.
    assert blockwise_cosines.max() < 0.99999, blockwise_cosines


def test_blockwise_int8_gives_fp32_vectors_for_a_call_past_its_token_limit():
    blockwise = OnnxEmbedder("all-MiniLM-L6-v2", precision="int8-blockwise")
    long_text = TEXTS[3]
    assert blockwise._tokenizer([long_text])["input_ids"].size > SMALL_CALL_TOKENS

    cosine = float(blockwise.encode([long_text])[0] @ Embedder(precision="fp32").encode([long_text])[0])

    assert cosine > 0.9999


def test_an_unknown_precision_is_refused_before_any_work():
    with pytest.raises(ValueError, match="fp32"):
        OnnxEmbedder("all-MiniLM-L6-v2", precision="fp16")


def test_torch_vectors_in_bf16_are_unit_length_in_float32_too():
    # Chroma's cosine and the replica's inner product agree only on vectors of length 1.
    vectors = Embedder(precision="bf16").encode(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
