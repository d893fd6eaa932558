from engines.chunking import Chunker, chunk_id


def paragraphs(n: int, edit: int | None = None) -> str:
    texts = [f"Paragraph {i} " + "lorem ipsum dolor sit amet " * 30 for i in range(n)]
    if edit is not None:
        texts[edit] = texts[edit].replace("lorem", "changed", 1)
    return "\n\n".join(texts)


def test_chunk_ids_are_deterministic():
    text = paragraphs(5)
    first = Chunker(1000, 100).split("doc", text)
    second = Chunker(1000, 100).split("doc", text)
    assert [c.id for c in first] == [c.id for c in second]


def test_chunk_ids_depend_on_document_and_text():
    assert chunk_id("a", 0, "text") != chunk_id("b", 0, "text")
    assert chunk_id("a", 0, "text") != chunk_id("a", 0, "texts")


def test_repeated_passages_get_distinct_ids():
    chunks = Chunker(50, 0).split("doc", "the very same words in here.\n\nthe very same words in here.")
    assert len(chunks) == 2 and chunks[0].text == chunks[1].text
    assert chunks[0].id != chunks[1].id


def test_editing_one_paragraph_changes_one_chunk():
    before = Chunker(1000, 100).split("doc", paragraphs(20))
    after = Chunker(1000, 100).split("doc", paragraphs(20, edit=7))
    assert len(before) == len(after) == 20
    assert len({c.id for c in after} - {c.id for c in before}) == 1


def test_inserting_a_paragraph_keeps_the_ids_of_the_others():
    text = paragraphs(6)
    grown = text.replace("Paragraph 3", "A new paragraph " + "about something else " * 35 + "\n\nParagraph 3")
    before = {c.id for c in Chunker(1000, 100).split("doc", text)}
    after = {c.id for c in Chunker(1000, 100).split("doc", grown)}
    assert before <= after and len(after - before) == 1
