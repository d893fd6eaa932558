"""scikit-learn's character ``HashingVectorizer`` (n-grams 1-6, 64 features), as nanoranker uses it.

nanoranker hashes every n-gram with MurmurHash3 in a Python loop, some 6,000 calls for a
1,000-character passage; here all n-grams of one byte length are hashed at once with numpy. The
vector is the same to the bit (the reranker tests compare it with nanoranker's own).
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

__all__ = ["textual_embedding"]

N_FEATURES = 64
MIN_N, MAX_N = 1, 6

_WHITESPACE = re.compile(r"\s\s+")
_MASK = np.uint64(0xFFFFFFFF)
_C1, _C2 = np.uint64(0xCC9E2D51), np.uint64(0x1B873593)


def textual_embedding(text: str) -> NDArray[np.float64]:
    """The L2-normalised, signed feature counts of ``text``'s lower-cased character n-grams."""
    text = _WHITESPACE.sub(" ", text.lower())
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    # Byte offset of each character (and of the end): n-grams are cut by characters, hashed as bytes.
    widths = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    offsets = np.concatenate([[0], np.cumsum(widths)])
    vec = np.zeros(N_FEATURES, dtype=np.float64)
    for n in range(MIN_N, min(MAX_N, len(text)) + 1):
        starts = offsets[: len(text) - n + 1]
        lengths = offsets[n:] - starts
        for length in np.unique(lengths):
            chosen = starts[lengths == length]
            hashes = _murmurhash3_32(data[chosen[:, None] + np.arange(length)], int(length))
            signed = np.where(hashes >= 2**31, hashes - 2**32, hashes)
            buckets = np.abs(signed) % N_FEATURES
            vec += np.bincount(buckets[signed >= 0], minlength=N_FEATURES)
            vec -= np.bincount(buckets[signed < 0], minlength=N_FEATURES)
    norm = np.sqrt((vec * vec).sum())
    if norm > 0:
        vec /= norm
    return vec


def _rotl(x: NDArray[np.uint64], r: int) -> NDArray[np.uint64]:
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _MASK


def _murmurhash3_32(rows: NDArray[np.uint64], length: int) -> NDArray[np.int64]:
    """MurmurHash3 x86_32 with seed 0 of each row of bytes (all ``length`` long), unsigned."""
    h1 = np.zeros(len(rows), dtype=np.uint64)
    blocks = length // 4
    for block in range(blocks):
        b = rows[:, 4 * block : 4 * block + 4]
        k1 = b[:, 0] | (b[:, 1] << np.uint64(8)) | (b[:, 2] << np.uint64(16)) | (b[:, 3] << np.uint64(24))
        h1 ^= _rotl((k1 * _C1) & _MASK, 15) * _C2 & _MASK
        h1 = (_rotl(h1, 13) * np.uint64(5) + np.uint64(0xE6546B64)) & _MASK
    tail = rows[:, 4 * blocks :]
    if tail.shape[1]:
        k1 = np.zeros(len(rows), dtype=np.uint64)
        for i in reversed(range(tail.shape[1])):
            k1 ^= tail[:, i] << np.uint64(8 * i)
        h1 ^= _rotl((k1 * _C1) & _MASK, 15) * _C2 & _MASK
    h1 ^= np.uint64(length)
    h1 ^= h1 >> np.uint64(16)
    h1 = (h1 * np.uint64(0x85EBCA6B)) & _MASK
    h1 ^= h1 >> np.uint64(13)
    h1 = (h1 * np.uint64(0xC2B2AE35)) & _MASK
    h1 ^= h1 >> np.uint64(16)
    return h1.astype(np.int64)
