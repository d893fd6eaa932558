"""Rules and decoding shared by the records on the topics (document events, feedback) and the
requests that carry a query (search, answer, feedback)."""

from __future__ import annotations

from typing import Annotated, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, Field, ValidationError

Record = TypeVar("Record", bound=BaseModel)


def _has_text(value: str) -> str:
    if not value.strip():
        raise ValueError("query must contain more than whitespace")
    return value


#: What a person asks: 1 to 4096 characters, not whitespace alone.
QueryText = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_has_text)]


def is_printable_doc_id(value: str) -> bool:
    """A doc_id has no control characters and no surrounding spaces."""
    return value == value.strip() and not any(ord(ch) < 32 for ch in value)


def decode_record(raw: bytes, model: type[Record], invalid: type[ValueError], whole: str) -> Record:
    """Decode ``raw`` as a JSON object of ``model``; any problem raises ``invalid`` with a readable
    reason that names each bad field by its path (``whole`` for the object itself)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid(f"expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors()
        )
        raise invalid(f"schema violation: {problems}") from None
