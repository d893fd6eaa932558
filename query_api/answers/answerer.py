"""Answering for one app: picks the template and generator a request asks for and runs the chain."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

from langchain_core.runnables.utils import AddableDict

from query_api.answers.chain import ChainState, Retriever, build_answer_chain
from query_api.answers.citations import CitationParser
from query_api.answers.errors import AnswerError, GeneratorNotConfigured, UnknownTemplate
from query_api.answers.extractive import ExtractiveGenerator
from query_api.answers.generator import Generator, GeneratorName
from query_api.answers.local import LocalGenerator, packaged_gguf
from query_api.answers.models import AnswerRequest, AnswerResponse, Citation, TemplateRef
from query_api.answers.openai_compatible import OpenAICompatibleGenerator
from query_api.answers.passages import retrieve_passages
from query_api.answers.prompt import Passage
from query_api.answers.templates import AnswerTemplate, TemplateLibrary
from query_api.services import Services
from query_api.tenancy import UNRESTRICTED, TenantScope


class Answerer:
    """Holds an app's prompt templates and its generators, each built on first use."""

    def __init__(self, services: Services, templates: TemplateLibrary | None = None) -> None:
        self.services = services
        self.templates = templates if templates is not None else TemplateLibrary.load()
        self._generators: dict[str, Generator] = {}

    def template(self, reference: str | None) -> AnswerTemplate:
        """The template a request names, else the configured default."""
        if reference is not None:
            return self.templates.get(reference)
        default = self.services.settings.answer_template
        try:
            return self.templates.get(default)
        except UnknownTemplate as exc:
            raise AnswerError(f"RAGSTREAM_ANSWER_TEMPLATE={default!r} names no template: {exc}") from exc

    def generator(self, name: GeneratorName | None) -> Generator:
        """The generator a request names, else the configured default."""
        name = name or self.services.settings.answer_generator
        if name not in self._generators:
            self._generators[name] = self._build_generator(name)
        return self._generators[name]

    async def answer(self, request: AnswerRequest, scope: TenantScope = UNRESTRICTED) -> AnswerResponse:
        """The answer to ``request``, from the passages ``scope`` may see."""
        started = time.perf_counter()
        template, generator = self.template(request.template), self.generator(request.generator)
        chain = build_answer_chain(self._retriever(scope), template, generator)
        state = await chain.ainvoke({"question": request.query, "k": request.k})
        return _response(state, template, generator, started)

    async def stream(
        self, request: AnswerRequest, scope: TenantScope = UNRESTRICTED
    ) -> AsyncGenerator[str | AnswerResponse, None]:
        """The answer's pieces as generated, then the whole response."""
        started = time.perf_counter()
        template, generator = self.template(request.template), self.generator(request.generator)
        chain = build_answer_chain(self._retriever(scope), template, generator, stream=True)
        state = AddableDict()
        # Closed explicitly when the consumer stops early: that is what stops the generation.
        stream = cast(
            AsyncGenerator[ChainState, None], chain.astream({"question": request.query, "k": request.k})
        )
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                if chunk.get("answer"):
                    yield chunk["answer"]
                # Adding chunks joins the answer's pieces, as LangChain aggregates a stream.
                state = state + AddableDict(chunk)
        yield _response(state, template, generator, started)

    def _retriever(self, scope: TenantScope) -> Retriever:
        async def retrieve(question: str, k: int) -> list[Passage]:
            return await retrieve_passages(self.services, question, k, scope)

        return retrieve

    def _build_generator(self, name: GeneratorName) -> Generator:
        settings = self.services.settings
        if name == "local":
            return LocalGenerator(
                settings.answer_local_gguf or packaged_gguf(),
                max_new_tokens=settings.answer_max_new_tokens,
                temperature=settings.answer_temperature,
            )
        if name == "openai":
            if not settings.answer_openai_base_url:
                raise GeneratorNotConfigured(name, "RAGSTREAM_ANSWER_OPENAI_BASE_URL")
            if not settings.answer_openai_model:
                raise GeneratorNotConfigured(name, "RAGSTREAM_ANSWER_OPENAI_MODEL")
            return OpenAICompatibleGenerator(
                settings.answer_openai_base_url,
                settings.answer_openai_model,
                api_key=settings.answer_openai_api_key,
                max_tokens=settings.answer_max_new_tokens,
                temperature=settings.answer_temperature,
                timeout_s=settings.answer_openai_timeout_s,
            )
        return ExtractiveGenerator(self.services.embedder, sentences=settings.answer_extractive_sentences)


def _response(
    state: ChainState, template: AnswerTemplate, generator: Generator, started: float
) -> AnswerResponse:
    passages: list[Passage] = state["passages"]
    markers = CitationParser().parse(state["answer"])
    cited = [n for n in markers if 1 <= n <= len(passages)]
    return AnswerResponse(
        answer=state["answer"].strip(),
        citations=[
            Citation(
                n=passage.n,
                doc_id=passage.doc_id,
                chunk_id=passage.chunk_id,
                chunk_index=passage.chunk_index,
                text=passage.text,
                score=passage.score,
            )
            for passage in passages
        ],
        cited=cited,
        note=_note(len(passages), cited, [n for n in markers if n not in cited]),
        template=TemplateRef(name=template.name, version=template.version),
        generator=generator.name,
        model=generator.model,
        took_ms=(time.perf_counter() - started) * 1000,
    )


def _note(passages: int, cited: list[int], stray: list[int]) -> str | None:
    notes = []
    if not passages:
        notes.append("no indexed passage matched the question")
    elif not cited:
        notes.append("the answer cites none of the passages; citations lists those it was given")
    if stray:
        markers = ", ".join(f"[{n}]" for n in stray)
        notes.append(f"ignored {markers}: the answer was given {passages} passages")
    return "; ".join(notes) or None
