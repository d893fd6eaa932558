"""Reading the passages an answer cites, written as ``[1]``, ``[2, 3]`` or ``[1][4]``."""

from __future__ import annotations

import re

from langchain_core.output_parsers import BaseOutputParser

_MARKER = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")


class CitationParser(BaseOutputParser[list[int]]):
    """The passage numbers an answer cites, in the order first cited, each once."""

    def parse(self, text: str) -> list[int]:
        cited: list[int] = []
        for marker in _MARKER.finditer(text):
            for number in marker.group(1).split(","):
                n = int(number)
                if n not in cited:
                    cited.append(n)
        return cited

    @property
    def _type(self) -> str:
        return "ragstream_citations"
