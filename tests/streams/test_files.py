from pathlib import Path

import pytest

from schemas import EventOp
from streams.files import SkippedFile, find_documents, read_document


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "setup.md").write_text("# Setup\n\nRun make up.")
    (tmp_path / "notes.txt").write_text("plain notes")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("ref: main")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.md").write_text("  \n")
    return tmp_path


def test_a_folder_yields_its_text_files_and_leaves_out_hidden_ones(folder):
    found = sorted(path.relative_to(folder).as_posix() for _, path in find_documents([folder]))
    assert found == ["empty.md", "guides/setup.md", "latin1.txt", "notes.txt"]


def test_doc_id_is_the_path_relative_to_the_folder_given(folder):
    event = read_document(folder, folder / "guides" / "setup.md", max_bytes=1000)
    assert not isinstance(event, SkippedFile)
    assert event.doc_id == "guides/setup.md" and event.op is EventOp.UPSERT
    assert event.content_type == "text/markdown" and event.content.startswith("# Setup")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("latin1.txt", "not UTF-8"), ("empty.md", "empty file"), ("notes.txt", "above the limit")],
)
def test_unreadable_files_are_skipped_with_a_reason(folder, name, reason):
    skipped = read_document(folder, folder / name, max_bytes=5)
    assert isinstance(skipped, SkippedFile) and reason in skipped.reason


def test_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(find_documents([tmp_path / "nope"]))
