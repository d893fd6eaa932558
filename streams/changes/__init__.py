"""The changes stage: ``docs.events`` → validate, normalise, dedupe → compacted ``docs.changes``."""

from streams.changes.dedupe import Decision, DocumentState, content_hash, decide, next_state
from streams.changes.normalise import html_to_text, normalise_event, normalise_text
from streams.changes.stage import ChangesStage, run_stage

__all__ = [
    "ChangesStage",
    "Decision",
    "DocumentState",
    "content_hash",
    "decide",
    "html_to_text",
    "next_state",
    "normalise_event",
    "normalise_text",
    "run_stage",
]
