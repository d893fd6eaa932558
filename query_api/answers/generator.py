"""The one interface every answer generator offers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

from query_api.answers.prompt import Prompt

GeneratorName = Literal["local", "openai", "extractive"]


class Generator(Protocol):
    """Writes an answer to a prompt, whole or piece by piece; never blocks the event loop."""

    #: As requests name it.
    name: GeneratorName
    #: The model behind it, for the response; None where there is none.
    model: str | None

    async def generate(self, prompt: Prompt) -> str:
        """The whole answer."""
        ...

    def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        """The answer in pieces as they are produced; joined, they equal ``generate``'s answer."""
        ...
