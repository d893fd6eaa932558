"""What a generator is given: the rendered chat messages and the passages they were built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk, numbered as the prompt shows it (from 1)."""

    n: int
    chunk_id: str
    doc_id: str
    text: str
    score: float
    chunk_index: int | None = None


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    """Model generators read ``messages``; the extractive one reads ``question`` and ``passages``."""

    messages: tuple[Message, ...]
    question: str
    passages: tuple[Passage, ...]

    def as_dicts(self) -> list[dict[str, str]]:
        """The messages as chat-template and OpenAI API dictionaries."""
        return [{"role": message.role, "content": message.content} for message in self.messages]
