"""Normalisation: one canonical text per document, whatever its markup and whitespace."""

from __future__ import annotations

import unicodedata

from schemas import DocumentEvent, EventOp
from streams.changes import html_to_text, normalise_event, normalise_text


def upsert(content: str, content_type: str = "text/plain") -> DocumentEvent:
    return DocumentEvent(doc_id="d", op=EventOp.UPSERT, content=content, content_type=content_type, version=1)


def test_html_becomes_paragraphs_of_visible_text():
    html = (
        "<html><head><title>T</title><style>p {}</style></head><body>"
        "<h1>Guernica</h1><p>A  painting by <b>Picasso</b>,\n  1937.</p>"
        "<script>track()</script><ul><li>oil</li><li>canvas</li></ul></body></html>"
    )
    event = normalise_event(upsert(html, "text/html; charset=utf-8"))
    assert event.content == "Guernica\n\nA painting by Picasso, 1937.\n\noil\ncanvas"
    assert event.content_type == "text/plain"


def test_html_entities_are_decoded():
    assert normalise_text(html_to_text("<p>Fish &amp; chips&nbsp;today</p>")) == "Fish & chips today"


def test_markdown_stays_markdown_with_its_indentation():
    markdown = "# Title\r\n\r\n\r\n\r\nSome   text  \n\n    code block\n- item\n  - nested"
    event = normalise_event(upsert(markdown, "text/markdown"))
    assert event.content == "# Title\n\nSome text\n\n    code block\n- item\n  - nested"
    assert event.content_type == "text/markdown"


def test_unicode_is_nfc_and_invisible_characters_go():
    decomposed = "cafe\u0301\u200b au\u00a0lait\ufeff"
    text = normalise_text(decomposed)
    assert text == "café au lait"
    assert unicodedata.is_normalized("NFC", text)


def test_plain_text_paragraph_breaks_survive_and_blank_runs_collapse():
    assert normalise_text("  one\t two \n\n\n\n three  \n") == "one two\n\nthree"


def test_already_normal_text_is_unchanged():
    text = "river stone ledger.\n\ncedar harbor signal."
    assert normalise_event(upsert(text)).content == text


def test_a_delete_passes_through():
    delete = DocumentEvent(doc_id="d", op=EventOp.DELETE, version=2)
    assert normalise_event(delete) == delete


def test_html_without_visible_text_normalises_to_nothing():
    assert normalise_event(upsert("<script>x()</script>   ", "text/html")).content == ""
