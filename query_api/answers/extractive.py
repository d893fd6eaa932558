"""Answers without a language model: the passages' sentences closest in meaning to the question."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from query_api.answers.generator import GeneratorName
from query_api.answers.prompt import Passage, Prompt

if TYPE_CHECKING:
    from query_api.query_embedding import TextEncoder

#: A sentence ends at . ! or ? followed by space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
#: Fragments shorter than this (headings, list markers) say too little to quote.
_MIN_WORDS = 4


@dataclass(frozen=True)
class Sentence:
    text: str
    passage: int


def split_sentences(passages: tuple[Passage, ...]) -> list[Sentence]:
    """Every sentence of every passage, each once, with the number of its passage."""
    seen: set[str] = set()
    sentences = []
    for passage in passages:
        for text in _SENTENCE_END.split(passage.text):
            text = text.strip()
            if len(text.split()) >= _MIN_WORDS and text not in seen:
                seen.add(text)
                sentences.append(Sentence(text, passage.n))
    return sentences


class ExtractiveGenerator:
    """Quotes the ``sentences`` best-matching sentences, best first, each followed by ``[n]``."""

    name: GeneratorName = "extractive"
    model: str | None = None

    def __init__(self, embedder: TextEncoder, *, sentences: int) -> None:
        self._embedder = embedder
        self._sentences = sentences

    async def generate(self, prompt: Prompt) -> str:
        return "".join([piece async for piece in self.stream(prompt)])

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        best = await asyncio.to_thread(self.best_sentences, prompt)
        for i, sentence in enumerate(best):
            yield f"{' ' if i else ''}{sentence.text} [{sentence.passage}]"

    def best_sentences(self, prompt: Prompt) -> list[Sentence]:
        sentences = split_sentences(prompt.passages)
        if not sentences:
            # Passages too short to split still answer: quote the best one whole.
            sentences = [Sentence(p.text.strip(), p.n) for p in prompt.passages[:1] if p.text.strip()]
        if len(sentences) <= 1:
            return sentences
        vectors = self._embedder.encode([prompt.question] + [sentence.text for sentence in sentences])
        # The vectors are L2-normalised: the dot product is the cosine similarity.
        similarity = vectors[1:] @ vectors[0]
        order = np.argsort(-similarity, kind="stable")[: self._sentences]
        return [sentences[i] for i in order]
