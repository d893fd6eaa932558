"""The answer chain, retrieve → prompt → generate, as LangChain runnables.

``ainvoke({"question": q, "k": k})`` returns every step's output in one dict (``passages``,
``prompt``, ``answer``). A chain built with ``stream=True`` is for ``astream``, which yields the
same keys as they are produced, the answer piece by piece; the two differ only in calling the
generator's ``stream`` instead of its ``generate``.

The citations are read from the finished answer, after the chain: a step after the generation,
such as ``RunnablePassthrough.assign(cited=...)``, runs in a task of its own that keeps pulling
the generation to its end even after the consumer closed the stream (langchain-core 1.8), and a
client that hangs up must stop the model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda, RunnablePassthrough

from query_api.answers.generator import Generator
from query_api.answers.prompt import Passage, Prompt
from query_api.answers.templates import AnswerTemplate

NO_PASSAGES_ANSWER = "No indexed passage matches the question, so there is nothing to answer from."

#: ``(question, k)`` → the passages to answer from, numbered from 1.
Retriever = Callable[[str, int], Awaitable[list[Passage]]]

ChainState = dict[str, Any]


def build_answer_chain(
    retrieve: Retriever, template: AnswerTemplate, generator: Generator, *, stream: bool = False
) -> Runnable[ChainState, ChainState]:
    async def passages(state: ChainState) -> list[Passage]:
        return await retrieve(state["question"], state["k"])

    async def prompt(state: ChainState) -> Prompt:
        return template.render(state["question"], state["passages"])

    async def answer(state: ChainState) -> str:
        rendered: Prompt = state["prompt"]
        # Without context a model answers from its own memory: exactly what citations rule out.
        return await generator.generate(rendered) if rendered.passages else NO_PASSAGES_ANSWER

    async def answer_pieces(states: AsyncIterator[ChainState]) -> AsyncIterator[str]:
        state: ChainState = {}
        async for chunk in states:
            state.update(chunk)
        rendered: Prompt = state["prompt"]
        if not rendered.passages:
            yield NO_PASSAGES_ANSWER
            return
        async for piece in generator.stream(rendered):
            yield piece

    generate: Runnable[ChainState, str] = (
        RunnableGenerator(answer_pieces) if stream else RunnableLambda(answer)
    )
    return (
        RunnablePassthrough.assign(passages=RunnableLambda(passages))
        | RunnablePassthrough.assign(prompt=RunnableLambda(prompt))
        | RunnablePassthrough.assign(answer=generate)
    )
