"""docs/configuration.md, written from the settings' own descriptions.

``python -m schemas.configuration_doc > docs/configuration.md`` writes it again after a setting
changed; ``python -m schemas.configuration_doc --check`` says whether the committed page is stale.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode

from schemas.fault_injection import CRASH_BEFORE_COMMIT_ENV
from schemas.settings import SETTINGS_GROUPS
from schemas.settings_groups import SettingsGroup

__all__ = ["PAGE", "configuration_page"]

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

_INTRO = """\
# Configuration

<!-- Written by `python -m schemas.configuration_doc > docs/configuration.md` from the settings'
descriptions in schemas/settings_groups.py: change those, then write this page again. -->

Every ragstream process (the API, the consumers, the changes stage, the watcher and the CLI) reads
its settings from `RAGSTREAM_*` environment variables, once, when it starts. A variable that is
not set takes the default below. Booleans are `true` or `false`; lists and mappings are JSON;
"unset" means the setting is off or derived, as its description says. Durations are in the unit
their name ends with (`_s` seconds, `_ms` milliseconds), sizes as their description says.
"""

_OUTRO = f"""\
## Not settings: fault injection

The chaos tests inject faults through variables of their own, which no setting reads (see
`schemas/fault_injection.py`): `{CRASH_BEFORE_COMMIT_ENV}` is the probability that a
consumer dies between its Chroma write and its offset commit. Never set them in a deployment.
"""

_TYPE_NAMES: dict[Any, str] = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret text",
}


def configuration_page() -> str:
    """The whole page: a table per group of settings."""
    parts = [_INTRO]
    for group in SETTINGS_GROUPS:
        parts.append(_group_section(group))
    parts.append(_OUTRO)
    return "\n".join(parts)


def _group_section(group: type[SettingsGroup]) -> str:
    title, _, about = (group.__doc__ or group.__name__).partition("\n")
    defaults = group.model_construct().to_env()
    rows = [
        "| variable | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in group.model_fields.items():
        env_name = group.env_name(name)
        cells = (f"`{env_name}`", _type_text(field), _default_text(defaults.get(env_name)), field.description)
        rows.append("| " + " | ".join(_cell(cell or "") for cell in cells) + " |")
    lines = [f"## {title.strip()}", ""]
    if about.strip():
        lines += [" ".join(about.split()), ""]
    return "\n".join([*lines, *rows, ""])


def _type_text(field: FieldInfo) -> str:
    if NoDecode in field.metadata:
        return "comma-separated list"
    lower = next(
        (item for item in field.metadata if isinstance(item, annotated_types.Ge | annotated_types.Gt)), None
    )
    upper = next(
        (item for item in field.metadata if isinstance(item, annotated_types.Le | annotated_types.Lt)), None
    )
    text = _annotation_text(field.annotation)
    if isinstance(lower, annotated_types.Ge) and isinstance(upper, annotated_types.Le):
        return f"{text}, {lower.ge} to {upper.le}"
    bounds = [_bound_text(item) for item in (lower, upper) if item is not None]
    return ", ".join([text, " and ".join(bounds)]) if bounds else text


def _annotation_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Literal:
        quoted = [f"`{value}`" for value in arguments]
        return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_annotation_text(argument) for argument in arguments)
    if origin in (tuple, list):
        return "list"
    if origin is dict:
        return "mapping"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bound_text(item: Any) -> str:
    if isinstance(item, annotated_types.Ge):
        return f"≥ {item.ge}"
    if isinstance(item, annotated_types.Gt):
        return f"> {item.gt}"
    if isinstance(item, annotated_types.Le):
        return f"≤ {item.le}"
    return f"< {item.lt}"


def _default_text(value: str | None) -> str:
    if value is None:
        return "unset"
    return f"`{value}`" if value else "empty"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.configuration_doc", description=__doc__)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {PAGE.name} is not up to date")
    args = parser.parse_args(argv)
    page = configuration_page()
    if not args.check:
        sys.stdout.write(page)
        return 0
    if PAGE.is_file() and PAGE.read_text(encoding="utf-8") == page:
        return 0
    print(
        f"{PAGE} is not what the settings describe: run `python -m schemas.configuration_doc > "
        "docs/configuration.md`",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
