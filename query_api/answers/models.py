"""Request and response bodies of ``POST /v1/answer``."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from query_api.answers.generator import GeneratorName
from query_api.models import ConsistencyTokenText
from schemas import QueryText


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText
    k: Annotated[int, Field(ge=1, le=20, description="passages retrieved and given to the generator")] = 4
    generator: GeneratorName | None = Field(default=None, description="the server's default if unset")
    template: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description='a prompt template name ("grounded") or name and version ("grounded.v1")'
    )
    stream: bool | None = Field(
        default=None, description="server-sent events; if unset, whether Accept names text/event-stream"
    )
    consistent_with: ConsistencyTokenText | None = Field(
        default=None,
        description="the token a write returned: retrieve only once the index includes that write",
    )


class Citation(BaseModel):
    n: int = Field(description="the passage's number in the prompt, as the answer cites it: [n]")
    doc_id: str
    chunk_id: str
    chunk_index: int | None = Field(default=None, description="the chunk's position in its document")
    text: str
    score: float = Field(description="the retrieval score")


class TemplateRef(BaseModel):
    name: str
    version: int


class AnswerResponse(BaseModel):
    answer_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, description="names this answer in POST /v1/feedback"
    )
    answer: str
    citations: list[Citation] = Field(description="every passage the generator was given, in prompt order")
    cited: list[int] = Field(description="the passages the answer refers to, by n, in order of first mention")
    note: str | None = Field(
        default=None, description="why cited is empty or shorter than the answer's markers"
    )
    template: TemplateRef
    generator: GeneratorName
    model: str | None = Field(default=None, description="the model behind the generator, if any")
    took_ms: float
