"""Content normalisation: one canonical text per document, so equal content hashes equal.

HTML becomes plain text (selectolax); Markdown and plain text stay as they are apart from
Unicode (NFC) and whitespace. Paragraph breaks survive, because the chunker splits on them.
"""

from __future__ import annotations

import re
import unicodedata

from selectolax.lexbor import LexborHTMLParser

from schemas import DocumentEvent

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MARKDOWN_TYPES = frozenset({"text/markdown", "text/x-markdown"})

#: Elements whose text is never content.
_INVISIBLE = ["script", "style", "noscript", "template", "head", "svg", "iframe"]
#: Elements that end a paragraph, and those that end a line.
_BLOCKS = (
    "p,div,section,article,header,footer,aside,nav,main,h1,h2,h3,h4,h5,h6,"
    "ul,ol,dl,table,pre,blockquote,figure,figcaption,hr,form,fieldset,details,summary"
)
_LINES = "li,dt,dd,tr,br"

# Private-use code points, removed from the input first.
_PARAGRAPH_MARK, _LINE_MARK = "\U0010fffd", "\U0010fffc"
_WHITESPACE = re.compile(r"\s+")

_INVISIBLE_CHARS = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
# Horizontal whitespace: every Unicode space except the line breaks kept below.
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def media_type(content_type: str) -> str:
    """``text/html; charset=utf-8`` → ``text/html``."""
    return content_type.split(";", 1)[0].strip().lower()


def html_to_text(html: str) -> str:
    """The visible text of an HTML document, with its blocks as paragraphs."""
    tree = LexborHTMLParser(html.replace(_PARAGRAPH_MARK, "").replace(_LINE_MARK, ""))
    tree.strip_tags(_INVISIBLE)
    # Line breaks in HTML source are mere spaces: mark the real ones with characters that
    # cannot occur in the text, fold all whitespace, then turn the marks into line breaks.
    for node in tree.css(_BLOCKS):
        node.insert_before(_PARAGRAPH_MARK)
        node.insert_after(_PARAGRAPH_MARK)
    for node in tree.css(_LINES):
        node.insert_after(_LINE_MARK)
    root = tree.body or tree.root
    text = "" if root is None else root.text(separator="", strip=False)
    return _WHITESPACE.sub(" ", text).replace(_PARAGRAPH_MARK, "\n\n").replace(_LINE_MARK, "\n")


def normalise_text(text: str, keep_indentation: bool = False) -> str:
    """NFC, one kind of line break, single spaces, at most one blank line between paragraphs.

    Markdown keeps its indentation: it is meaning there (code blocks, nested lists).
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _INVISIBLE_CHARS.sub("", text)
    lines = []
    for line in text.split("\n"):
        body = line.lstrip()
        indent = line[: len(line) - len(body)].replace("\t", "    ") if keep_indentation else ""
        lines.append(indent + _SPACES.sub(" ", body).rstrip())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


def normalise_event(event: DocumentEvent) -> DocumentEvent:
    """The event with canonical content; ``content_type`` says what the content now is.

    A delete carries no content and is returned as it is.
    """
    if not event.content:
        return event
    kind = media_type(event.content_type)
    if kind in HTML_TYPES:
        content, kind = normalise_text(html_to_text(event.content)), "text/plain"
    else:
        content = normalise_text(event.content, keep_indentation=kind in MARKDOWN_TYPES)
    return event.model_copy(update={"content": content, "content_type": kind})
