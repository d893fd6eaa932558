"""Any server speaking OpenAI's chat completions API: vLLM, Ollama, llama.cpp, hosted APIs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import SecretStr

from query_api.answers.errors import GenerationFailed
from query_api.answers.generator import GeneratorName
from query_api.answers.prompt import Prompt

#: Answers worth asking again for: rate limits and server-side failures.
_RETRIABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


def chat_completions_url(base_url: str) -> str:
    """``http://host:port`` and ``http://host:port/v1`` both mean ``.../v1/chat/completions``."""
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class OpenAICompatibleGenerator:
    """POSTs the prompt's messages to ``/v1/chat/completions``; streams its server-sent events."""

    name: GeneratorName = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | None,
        max_tokens: int,
        temperature: float,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = chat_completions_url(base_url)
        self.model: str | None = model
        self._api_key = api_key
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._timeout = httpx.Timeout(timeout_s)
        self._transport = transport

    async def generate(self, prompt: Prompt) -> str:
        async with self._client() as client:
            try:
                response = await client.post(self.url, json=self._body(prompt, stream=False))
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            self._check(response.status_code, response.text)
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, LookupError, TypeError) as exc:
                raise GenerationFailed(
                    self.name, f"unexpected reply: {response.text[:200]!r}", retriable=False
                ) from exc
            return str(content or "")

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        # A client per call: nothing to close at shutdown, and a connection costs little next to
        # a generation.
        async with self._client() as client:
            try:
                async with client.stream("POST", self.url, json=self._body(prompt, stream=True)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        self._check(response.status_code, response.text)
                    async for line in response.aiter_lines():
                        piece = self._delta(line)
                        if piece is None:
                            break
                        if piece:
                            yield piece
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc

    def _client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return httpx.AsyncClient(headers=headers, timeout=self._timeout, transport=self._transport)

    def _body(self, prompt: Prompt, *, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": prompt.as_dicts(),
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "stream": stream,
        }

    def _check(self, status: int, text: str) -> None:
        if status >= 400:
            raise GenerationFailed(
                self.name,
                f"{self.url} answered {status}: {text[:200]!r}",
                retriable=status in _RETRIABLE_STATUS,
            )

    def _delta(self, line: str) -> str | None:
        """The text in one line of the event stream; "" for lines without any, None at the end."""
        if not line.startswith("data:"):
            return ""
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            return None
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise GenerationFailed(self.name, f"unreadable event {data[:200]!r}", retriable=False) from exc
        if "error" in chunk:
            raise GenerationFailed(self.name, f"error event: {chunk['error']!r}"[:300], retriable=False)
        choices = chunk.get("choices") or [{}]
        return str((choices[0].get("delta") or {}).get("content") or "")

    def _unreachable(self, exc: httpx.HTTPError) -> GenerationFailed:
        return GenerationFailed(self.name, f"{self.url}: {type(exc).__name__}: {exc}", retriable=True)
