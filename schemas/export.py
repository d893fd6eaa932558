"""Writes the JSON Schema of ``DocumentEvent`` for producers in other languages.

Run ``python -m schemas.export`` after changing the model; a test checks the file is current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from schemas.events import SCHEMA_VERSION, DocumentEvent

SCHEMA_FILE = Path(__file__).parent / "json" / f"document_event.v{SCHEMA_VERSION}.schema.json"


def event_json_schema() -> dict[str, Any]:
    schema = DocumentEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"ragstream/document_event.v{SCHEMA_VERSION}.schema.json"
    return schema


def main() -> None:
    SCHEMA_FILE.parent.mkdir(exist_ok=True)
    SCHEMA_FILE.write_bytes(
        orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    print(f"wrote {SCHEMA_FILE}")


if __name__ == "__main__":
    main()
