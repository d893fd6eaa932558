"""Prompt templates kept as versioned files: ``prompts/<name>.v<version>.toml``.

Each file holds ``name``, ``version``, ``description``, the ``system`` and ``human`` messages
(LangChain f-string templates over ``{question}`` and ``{passages}``) and ``passage``, the layout
of one numbered passage (over ``{n}``, ``{doc_id}`` and ``{text}``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, ConfigDict, Field

from query_api.answers.errors import UnknownTemplate
from query_api.answers.prompt import Message, Passage, Prompt, Role

PACKAGED_PROMPTS = Path(__file__).with_name("prompts")

_VARIABLES = {"question", "passages"}
_FILE_NAME = re.compile(r"(?P<name>[a-z0-9_-]+)\.v(?P<version>[0-9]+)\.toml")
_ROLES: dict[str, Role] = {"system": "system", "human": "user", "ai": "assistant"}


class TemplateFile(BaseModel):
    """The contents of one template file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")]
    version: Annotated[int, Field(ge=1)]
    description: str = ""
    system: str
    human: str
    passage: str = "[{n}] {text}"


@dataclass(frozen=True)
class AnswerTemplate:
    """A loaded template: renders a question and its passages into chat messages."""

    name: str
    version: int
    description: str
    chat: ChatPromptTemplate
    passage: str

    @classmethod
    def from_file(cls, path: Path) -> AnswerTemplate:
        spec = TemplateFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        # The file name is how operators find a template: it must not disagree with its content.
        if path.name != f"{spec.name}.v{spec.version}.toml":
            raise ValueError(
                f"{path}: holds {spec.name} v{spec.version}, so must be named "
                f"{spec.name}.v{spec.version}.toml"
            )
        chat = ChatPromptTemplate.from_messages([("system", spec.system), ("human", spec.human)])
        if set(chat.input_variables) != _VARIABLES:
            raise ValueError(
                f"{path}: the messages must use exactly {{question}} and {{passages}}, "
                f"not {sorted(chat.input_variables)}"
            )
        try:
            spec.passage.format(n=1, doc_id="", text="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{path}: passage may use only {{n}}, {{doc_id}} and {{text}}: {exc!r}") from exc
        return cls(spec.name, spec.version, spec.description, chat, spec.passage)

    @property
    def reference(self) -> str:
        return f"{self.name}.v{self.version}"

    def render(self, question: str, passages: Sequence[Passage]) -> Prompt:
        block = "\n\n".join(
            self.passage.format(n=passage.n, doc_id=passage.doc_id, text=passage.text.strip())
            for passage in passages
        )
        value = self.chat.invoke({"question": question, "passages": block})
        messages = tuple(
            Message(role=_ROLES[message.type], content=str(message.content))
            for message in value.to_messages()
        )
        return Prompt(messages=messages, question=question, passages=tuple(passages))


class TemplateLibrary:
    """Every template in a folder, found by ``name`` (its latest version) or ``name.vN``."""

    def __init__(self, templates: Sequence[AnswerTemplate]) -> None:
        self._by_reference = {template.reference: template for template in templates}
        self._latest: dict[str, AnswerTemplate] = {}
        for template in sorted(templates, key=lambda template: template.version):
            self._latest[template.name] = template

    @classmethod
    def load(cls, folder: Path = PACKAGED_PROMPTS) -> TemplateLibrary:
        paths = sorted(path for path in folder.iterdir() if _FILE_NAME.fullmatch(path.name))
        return cls([AnswerTemplate.from_file(path) for path in paths])

    @property
    def references(self) -> list[str]:
        """Every ``name.vN``, sorted."""
        return sorted(self._by_reference)

    def get(self, reference: str) -> AnswerTemplate:
        """The template ``name.vN``, or the latest version of ``name``."""
        template = self._by_reference.get(reference) or self._latest.get(reference)
        if template is None:
            raise UnknownTemplate(reference, sorted(self._latest) + self.references)
        return template
