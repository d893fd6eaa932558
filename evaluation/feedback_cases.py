"""Evaluation cases from feedback: the ratings that confirm which document answers a query.

A rating confirms a (query, document) pair when

- it names ``correct_doc_id``: that document, whatever the rating says of the result; or
- it is a thumb up (``rating = 1``) naming a ``doc_id``: the rated hit's (or cited) document.

A thumb down without ``correct_doc_id`` says what is wrong, not what is right, so it is no case;
neither is a thumb up on an answer that names no document. Nothing cancels a confirmation: a
pair that one person confirmed and another rated down stays a case. Pairs are counted once
(query compared with whitespace folded and case ignored; the first wording is kept).

A tenant's feedback names its documents as the tenant knows them; cases name them as the index
stores them, and are searched over the whole index (which can only rank them lower).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from evaluation.cases import EvalCase
from query_api.tenancy import TenantScope
from schemas.feedback import FeedbackEvent, normalized_query

__all__ = ["FeedbackCases", "cases_from_feedback", "confirmed_doc_id"]


@dataclass
class FeedbackCases:
    cases: list[EvalCase] = field(default_factory=list)
    #: Feedback records read.
    feedback: int = 0
    #: Records that confirmed a pair already counted.
    duplicates: int = 0
    #: Records that confirm nothing (a thumb down without a correction, a thumb up naming no document).
    unconfirmed: int = 0


def confirmed_doc_id(event: FeedbackEvent) -> str | None:
    """The document this feedback confirms as the answer to its query, if any, by the id the index
    stores it under (a tenant's ``x`` is stored as ``<tenant>/x``)."""
    if event.correct_doc_id is not None:
        named = event.correct_doc_id
    elif event.rating == 1 and event.doc_id is not None:
        named = event.doc_id
    else:
        return None
    return TenantScope(event.tenant).stored_id(named)


def cases_from_feedback(events: Iterable[FeedbackEvent]) -> FeedbackCases:
    """One case per confirmed (query, document) pair, in the order first confirmed."""
    found = FeedbackCases()
    seen: set[tuple[str, str]] = set()
    for event in events:
        found.feedback += 1
        doc_id = confirmed_doc_id(event)
        if doc_id is None:
            found.unconfirmed += 1
            continue
        pair = (normalized_query(event.query), doc_id)
        if pair in seen:
            found.duplicates += 1
            continue
        seen.add(pair)
        found.cases.append(EvalCase.known_item(event.query, doc_id))
    return found
