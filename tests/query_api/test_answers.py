"""``POST /v1/answer`` over a real Chroma server and broker, the real embedding and local models.

The OpenAI-compatible client is tested against a small server speaking that API on localhost.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from deploy import free_port
from engines.embedder import Embedder
from query_api import create_app
from query_api.answers.chain import NO_PASSAGES_ANSWER, build_answer_chain
from query_api.answers.citations import CitationParser
from query_api.answers.errors import GenerationFailed
from query_api.answers.generator import GeneratorName
from query_api.answers.local import SMOLLM2_FILE
from query_api.answers.openai_compatible import OpenAICompatibleGenerator, chat_completions_url
from query_api.answers.prompt import Message, Passage, Prompt
from query_api.answers.templates import AnswerTemplate, TemplateLibrary
from schemas.settings import Settings
from streams.topics import ensure_topics

IndexChunks = Callable[..., Awaitable[None]]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
ServeHttp = Callable[[Any], AbstractAsyncContextManager[str]]

pytestmark = pytest.mark.integration

API_KEY = "test-key"
FAKE_MODEL = "fake-model"

#: (doc_id, chunk_index, text)
CORPUS = [
    (
        "guides/kafka",
        0,
        "Apache Kafka stores streams of records in partitioned, replicated commit logs. "
        "Consumer groups share the partitions of a topic and commit their offsets.",
    ),
    (
        "recipes/sourdough",
        0,
        "To bake sourdough bread, feed the starter the night before. Let the dough rise slowly overnight.",
    ),
    (
        "recipes/sourdough",
        1,
        "Bake the loaf in a very hot Dutch oven for forty minutes until the crust is dark. "
        "Let it cool on a rack before cutting it.",
    ),
    (
        "science/photosynthesis",
        0,
        "Plants turn sunlight, water and carbon dioxide into sugar and oxygen in their chloroplasts. "
        "The green pigment chlorophyll absorbs mostly red and blue light.",
    ),
    (
        "art/guernica",
        0,
        "Picasso painted Guernica in 1937 after the bombing of the Basque town. "
        "The mural hangs in the Museo Reina Sofia in Madrid.",
    ),
]

PLANTS = "What do plants make from sunlight, water and carbon dioxide?"
BAKING = "How long should the loaf bake in the oven?"


# --- a server speaking the OpenAI chat completions API ------------------------------------------


@dataclass
class FakeOpenAI:
    """Answers from the passage that mentions chloroplasts, citing its number; records requests."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        if body["model"] == "overloaded":
            return JSONResponse({"error": {"message": "try again later"}}, status_code=503)
        answer = self.answer(body["messages"])
        if not body.get("stream"):
            message = {"role": "assistant", "content": answer}
            return JSONResponse({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})

        async def events() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant"})
            for piece in re.findall(r"\S+\s*", answer):
                yield _chunk({"content": piece})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @staticmethod
    def answer(messages: list[dict[str, str]]) -> str:
        user = next(message["content"] for message in messages if message["role"] == "user")
        found = re.search(r"^\[(\d+)\][^\n]*chloroplasts", user, re.MULTILINE)
        if found is None:
            return "I do not know."
        return f"Plants make sugar and oxygen from them [{found.group(1)}]."


def _chunk(delta: dict[str, str]) -> bytes:
    return (
        b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [{"delta": delta}]}) + b"\n\n"
    )


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def fake_openai(serve_http: ServeHttp) -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    async with serve_http(fake.app()) as url:
        yield fake, url


@pytest.fixture(scope="module")
async def answer_settings(
    module_settings: Callable[..., Settings], fake_openai: tuple[FakeOpenAI, str]
) -> Settings:
    settings = module_settings(
        "answers",
        partitions=1,
        answer_openai_base_url=fake_openai[1],
        answer_openai_model=FAKE_MODEL,
        answer_openai_api_key=SecretStr(API_KEY),
    )
    await ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def indexed(answer_settings: Settings, index_chunks: IndexChunks) -> dict[str, tuple[str, int]]:
    """The corpus as the consumers write it; returns each chunk's doc_id and index by chunk id."""
    ids = [uuid.uuid4().hex for _ in CORPUS]
    await index_chunks(
        answer_settings,
        ids,
        [text for _, _, text in CORPUS],
        [
            {"doc_id": doc_id, "version": 1, "chunk_index": index, "source": "tests", "indexed_at": 1.7e9}
            for doc_id, index, _ in CORPUS
        ],
        chunk_log=False,
    )
    return {chunk_id: (doc_id, index) for chunk_id, (doc_id, index, _) in zip(ids, CORPUS, strict=True)}


@pytest.fixture(scope="module")
async def api(
    answer_settings: Settings, embedder: Embedder, indexed: Any, serve_http: ServeHttp
) -> AsyncIterator[httpx.AsyncClient]:
    """The app served over real HTTP, so that streamed events arrive as they are sent."""
    async with (
        serve_http(create_app(answer_settings, embedder=embedder)) as url,
        httpx.AsyncClient(base_url=url, timeout=300) as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def local_answer(api: httpx.AsyncClient) -> dict[str, Any]:
    """One answer of the local model (the default generator), shared by the tests that read it."""
    response = await api.post("/v1/answer", json={"query": PLANTS})
    assert response.status_code == 200, response.text
    return dict(response.json())


@dataclass(frozen=True)
class Event:
    name: str
    data: Any
    at: float


async def _events(api: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> list[Event]:
    """POST and read the server-sent events, noting when each arrived."""
    events, name, data = [], "message", ""
    async with api.stream("POST", "/v1/answer", json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data = line.removeprefix("data:").strip()
            elif not line and data:
                events.append(Event(name, orjson.loads(data), time.perf_counter()))
                name, data = "message", ""
    return events


def _cited_docs(body: dict[str, Any]) -> list[str]:
    by_n = {citation["n"]: citation for citation in body["citations"]}
    return [by_n[n]["doc_id"] for n in body["cited"]]


# --- the local model ------------------------------------------------------------------------------


async def test_local_model_answers_from_passages_led_by_the_relevant_document(
    local_answer: dict[str, Any], indexed: dict[str, tuple[str, int]]
) -> None:
    body = local_answer

    assert body["generator"] == "local"
    assert body["model"] == SMOLLM2_FILE
    assert body["template"] == {"name": "grounded", "version": 1}
    assert len(body["answer"].split()) >= 3
    assert re.search(r"plant|sugar|oxygen|glucose|photosynthesis|chloroplast", body["answer"], re.I)
    citations = body["citations"]
    assert [citation["n"] for citation in citations] == [1, 2, 3, 4]
    assert citations[0]["doc_id"] == "science/photosynthesis"
    assert "chloroplasts" in citations[0]["text"]
    assert indexed[citations[0]["chunk_id"]] == ("science/photosynthesis", 0)
    assert citations[0]["chunk_index"] == 0
    assert all(1 <= n <= 4 for n in body["cited"])
    if not body["cited"]:
        # A 135M model often forgets the markers; the response says so instead of inventing them.
        assert "cites none of the passages" in body["note"]
    assert body["took_ms"] > 0


async def test_local_model_streams_tokens_as_generated_then_done_with_the_same_answer(
    api: httpx.AsyncClient, local_answer: dict[str, Any]
) -> None:
    events = await _events(api, {"query": PLANTS, "stream": True})

    names = [event.name for event in events]
    assert names[-1] == "done" and names.count("done") == 1
    tokens = [event for event in events if event.name == "token"]
    assert len(tokens) == len(events) - 1 >= 5
    # Greedy decoding: the streamed answer is the one the plain request got.
    streamed = "".join(event.data["text"] for event in tokens)
    done = events[-1].data
    assert streamed.strip() == done["answer"] == local_answer["answer"]
    assert done["citations"] == local_answer["citations"]
    assert done["cited"] == local_answer["cited"]
    # Sent as generated, not buffered until the end.
    assert events[-1].at - tokens[0].at > 0.1


async def test_a_client_hanging_up_mid_stream_stops_the_local_model(
    api: httpx.AsyncClient, answer_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="query_api.answers.local")
    body = {"query": "Explain in detail how Kafka consumer groups work.", "stream": True}
    async with api.stream("POST", "/v1/answer", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: token"):
                break
    # Hung up after the first token: the model stops at its next token instead of writing the
    # whole long answer (one model serves requests in turn, so it would hold up everyone else).
    response = await api.post("/v1/answer", json={"query": PLANTS})

    assert response.status_code == 200
    stopped = [r.getMessage() for r in caplog.records if "its reader went away" in r.getMessage()]
    assert len(stopped) == 1, stopped
    generated = int(stopped[0].split("after ")[1].split(" of")[0])
    assert generated < answer_settings.answer_max_new_tokens / 2, stopped[0]


# --- extractive -------------------------------------------------------------------------------------


async def test_extractive_answer_quotes_the_sentence_that_answers_and_cites_its_document(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/answer", json={"query": BAKING, "generator": "extractive"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generator"] == "extractive"
    assert body["model"] is None
    first = re.match(r"(.+?) \[(\d+)\]", body["answer"])
    assert first is not None
    assert (
        first.group(1) == "Bake the loaf in a very hot Dutch oven for forty minutes until the crust is dark."
    )
    assert body["cited"][0] == int(first.group(2))
    assert _cited_docs(body)[0] == "recipes/sourdough"
    assert len(body["cited"]) <= 2  # answer_extractive_sentences
    assert body["note"] is None


async def test_accept_event_stream_streams_sentences_then_done_matching_the_plain_answer(
    api: httpx.AsyncClient,
) -> None:
    body = {"query": BAKING, "generator": "extractive"}
    plain = (await api.post("/v1/answer", json=body)).json()

    events = await _events(api, body, accept="text/event-stream")

    assert [event.name for event in events] == ["token", "token", "done"]
    assert "".join(event.data["text"] for event in events[:-1]) == plain["answer"]
    done = events[-1].data
    assert (done["citations"], done["cited"]) == (plain["citations"], plain["cited"])


async def test_stream_false_answers_json_even_when_events_are_accepted(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/answer",
        json={"query": BAKING, "generator": "extractive", "stream": False},
        headers={"accept": "text/event-stream"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


# --- an OpenAI-compatible endpoint -----------------------------------------------------------------


async def test_openai_generator_sends_the_prompt_and_cites_what_the_endpoint_cited(
    api: httpx.AsyncClient, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    fake.requests.clear()

    response = await api.post("/v1/answer", json={"query": PLANTS, "generator": "openai"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generator"] == "openai"
    assert body["model"] == FAKE_MODEL
    assert re.fullmatch(r"Plants make sugar and oxygen from them \[\d\]\.", body["answer"])
    assert _cited_docs(body) == ["science/photosynthesis"]
    assert body["note"] is None
    [sent] = fake.requests
    assert sent["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert sent["body"]["model"] == FAKE_MODEL
    assert sent["body"]["stream"] is False
    assert sent["body"]["max_tokens"] == 128
    system, user = sent["body"]["messages"]
    assert system["role"] == "system" and "square brackets" in system["content"]
    assert user["role"] == "user" and user["content"].endswith(f"Question: {PLANTS}")
    assert re.findall(r"^\[(\d+)\] ", user["content"], re.MULTILINE) == ["1", "2", "3", "4"]


async def test_openai_generator_streams_the_endpoints_tokens(
    api: httpx.AsyncClient, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    fake.requests.clear()

    events = await _events(api, {"query": PLANTS, "generator": "openai", "stream": True})

    tokens = [event.data["text"] for event in events if event.name == "token"]
    assert tokens[:3] == ["Plants ", "make ", "sugar "]
    done = events[-1].data
    assert "".join(tokens) == done["answer"]
    assert _cited_docs(done) == ["science/photosynthesis"]
    assert fake.requests[-1]["body"]["stream"] is True


async def test_an_answer_citing_nothing_says_so(api: httpx.AsyncClient) -> None:
    # Nothing about chloroplasts in the passages: the endpoint answers without a citation.
    response = await api.post(
        "/v1/answer", json={"query": "Where does the Guernica mural hang?", "k": 1, "generator": "openai"}
    )

    body = response.json()
    assert body["answer"] == "I do not know."
    assert body["cited"] == []
    assert [citation["doc_id"] for citation in body["citations"]] == ["art/guernica"]
    assert "cites none of the passages" in body["note"]


async def test_an_answer_consistent_with_a_token_no_write_returned_is_a_400_that_says_so(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/v1/answer",
        json={"query": "Where is the mural?", "generator": "extractive", "consistent_with": "not-a-token"},
    )

    assert response.status_code == 400
    assert "token" in response.json()["detail"]


async def test_openai_client_accepts_a_base_url_with_or_without_v1() -> None:
    assert chat_completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("https://h/openai/v1") == "https://h/openai/v1/chat/completions"


def _client(url: str, *, model: str = FAKE_MODEL, key: str | None = API_KEY) -> OpenAICompatibleGenerator:
    return OpenAICompatibleGenerator(
        url,
        model,
        api_key=SecretStr(key) if key else None,
        max_tokens=16,
        temperature=0.0,
        timeout_s=10,
    )


PROMPT = Prompt(
    messages=(Message("user", "[1] Leaves hold chloroplasts.\n\nQuestion: what?"),),
    question="what?",
    passages=(),
)


async def test_openai_client_generates_and_streams_the_same_text(fake_openai: tuple[FakeOpenAI, str]) -> None:
    _, url = fake_openai
    client = _client(f"{url}/v1")

    whole = await client.generate(PROMPT)
    pieces = [piece async for piece in client.stream(PROMPT)]

    assert whole == "Plants make sugar and oxygen from them [1]."
    assert "".join(pieces) == whole
    assert len(pieces) == 8


async def test_openai_client_reports_an_overloaded_endpoint_as_retriable(
    fake_openai: tuple[FakeOpenAI, str],
) -> None:
    _, url = fake_openai

    for call in (_client(url, model="overloaded").generate(PROMPT), _anext(_client(url, model="overloaded"))):
        with pytest.raises(GenerationFailed, match="503") as failed:
            await call
        assert failed.value.retriable


async def test_openai_client_reports_a_rejected_key_as_not_retriable(
    fake_openai: tuple[FakeOpenAI, str],
) -> None:
    _, url = fake_openai

    with pytest.raises(GenerationFailed, match="401") as failed:
        await _client(url, key="wrong").generate(PROMPT)

    assert not failed.value.retriable


async def test_openai_client_reports_an_unreachable_endpoint_as_retriable() -> None:
    with pytest.raises(GenerationFailed, match="ConnectError") as failed:
        await _client(f"http://127.0.0.1:{free_port()}").generate(PROMPT)

    assert failed.value.retriable


async def _anext(client: OpenAICompatibleGenerator) -> str:
    return await anext(client.stream(PROMPT))


# --- templates --------------------------------------------------------------------------------------


async def test_a_request_may_choose_the_template_by_name_and_the_model_gets_it(
    api: httpx.AsyncClient, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    fake.requests.clear()

    response = await api.post(
        "/v1/answer", json={"query": PLANTS, "generator": "openai", "template": "brief"}
    )

    assert response.json()["template"] == {"name": "brief", "version": 1}
    user = fake.requests[-1]["body"]["messages"][1]["content"]
    assert "(science/photosynthesis) Plants turn sunlight" in user  # brief's passage layout
    assert user.endswith("Answer:")


async def test_a_request_may_pin_a_template_version(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/answer", json={"query": BAKING, "generator": "extractive", "template": "grounded.v1"}
    )

    assert response.json()["template"] == {"name": "grounded", "version": 1}


def _write_template(folder: Path, name: str, version: int, human: str = "{passages}\n{question}") -> None:
    (folder / f"{name}.v{version}.toml").write_text(
        f'name = "{name}"\nversion = {version}\nsystem = "v{version}"\nhuman = """{human}"""\n'
    )


def test_a_template_name_means_its_latest_version(tmp_path: Path) -> None:
    for version in (1, 2, 10):
        _write_template(tmp_path, "qa", version)

    library = TemplateLibrary.load(tmp_path)

    assert library.get("qa").version == 10
    assert library.get("qa.v2").version == 2
    assert library.references == ["qa.v1", "qa.v10", "qa.v2"]


def test_a_template_file_must_be_named_after_its_name_and_version(tmp_path: Path) -> None:
    _write_template(tmp_path, "qa", 1)
    (tmp_path / "qa.v1.toml").rename(tmp_path / "qa.v3.toml")

    with pytest.raises(ValueError, match=r"must be named qa\.v1\.toml"):
        TemplateLibrary.load(tmp_path)


def test_a_template_must_show_the_passages(tmp_path: Path) -> None:
    _write_template(tmp_path, "qa", 1, human="{question}")

    with pytest.raises(ValueError, match="passages"):
        AnswerTemplate.from_file(tmp_path / "qa.v1.toml")


def test_passages_are_numbered_in_the_prompt_as_the_template_lays_them_out() -> None:
    template = TemplateLibrary.load().get("grounded")
    passages = [Passage(n, f"c{n}", f"d{n}", f"Text {{{n}}}.", 0.5) for n in (1, 2)]

    prompt = template.render("Why?", passages)

    assert [message.role for message in prompt.messages] == ["system", "user"]
    assert prompt.messages[1].content == "Passages:\n[1] Text {1}.\n\n[2] Text {2}.\n\nQuestion: Why?"


def test_citation_markers_are_read_in_order_of_first_mention() -> None:
    assert CitationParser().parse("A [2], b [1, 3][2] and c [ 4 ]; not [x] or 5.") == [2, 1, 3, 4]


class _Unused:
    """A generator that fails the test if asked for anything."""

    name: GeneratorName = "extractive"
    model: str | None = None

    async def generate(self, prompt: Prompt) -> str:
        raise AssertionError("generate was called")

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        raise AssertionError("stream was called")
        yield ""


@pytest.mark.parametrize("stream", [False, True])
async def test_without_passages_nothing_is_generated(stream: bool) -> None:
    async def nothing(question: str, k: int) -> list[Passage]:
        return []

    chain = build_answer_chain(nothing, TemplateLibrary.load().get("grounded"), _Unused(), stream=stream)
    question = {"question": "Anything?", "k": 4}
    if stream:
        chunks = [chunk async for chunk in chain.astream(question)]
        state = {key: value for chunk in chunks for key, value in chunk.items()}
    else:
        state = await chain.ainvoke(question)

    assert (state["answer"], state["passages"]) == (NO_PASSAGES_ANSWER, [])


# --- bad requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "complaint"),
    [
        (
            {"query": "bread", "template": "sonnet"},
            400,
            "no prompt template 'sonnet'; available: brief, grounded",
        ),
        ({"query": "bread", "template": "grounded.v9", "stream": True}, 400, "grounded.v9"),
        ({"query": "bread", "generator": "gpt"}, 422, "'local', 'openai' or 'extractive'"),
        ({"query": "   "}, 422, "whitespace"),
        ({"query": "bread", "k": 0}, 422, "k"),
        ({"query": "bread", "k": 21}, 422, "k"),
        ({"query": "bread", "temperature": 1}, 422, "temperature"),
    ],
)
async def test_bad_answer_request_is_a_4xx_saying_what_is_wrong(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, complaint: str
) -> None:
    response = await api.post("/v1/answer", json=body)

    assert response.status_code == status
    assert complaint in response.text


async def test_openai_generator_without_its_settings_is_a_400_naming_the_setting(
    answer_settings: Settings, embedder: Embedder, indexed: Any, serve: Serve
) -> None:
    settings = answer_settings.model_copy(update={"answer_openai_base_url": None})

    async with serve(create_app(settings, embedder=embedder)) as client:
        plain = await client.post("/v1/answer", json={"query": "bread", "generator": "openai"})
        streamed = await client.post(
            "/v1/answer", json={"query": "bread", "generator": "openai", "stream": True}
        )

    for response in (plain, streamed):
        assert response.status_code == 400
        assert (
            response.json()["detail"]
            == "the openai generator is not configured: set RAGSTREAM_ANSWER_OPENAI_BASE_URL"
        )
