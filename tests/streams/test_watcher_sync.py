"""Reconciling a watched folder with what was published from it: hashing, state, formats, links."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pdf_samples import pdf_document

from schemas import EventOp
from streams.files import SkippedFile
from streams.ignore import IGNORE_FILE
from streams.watch_state import TrackedFile, WatchState, WatchStateLocked, state_file
from streams.watch_sync import Change, FolderSync


class Folder:
    """A watched folder and its state file; ``sync()`` is one acknowledged pass of a watcher."""

    def __init__(self, root: Path, state_path: Path, namespace: str | None = None) -> None:
        self.root = root
        self.state_path = state_path
        self.namespace = namespace

    def write(self, relative: str, content: str | bytes, age_s: float = 0) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
        if age_s:
            stamp = time.time_ns() - int(age_s * 1e9)
            os.utime(path, ns=(stamp, stamp))
        return path

    def sync(
        self, *prefixes: str, trust_stat: bool = True, max_bytes: int = 10_000, acknowledged: bool = True
    ) -> list[Change | SkippedFile]:
        with WatchState(self.state_path) as state:
            folder = FolderSync(self.root, state, max_bytes=max_bytes, namespace=self.namespace)
            planned = list(folder.changes(prefixes or [""], trust_stat=trust_stat))
            if acknowledged:
                folder.apply([c for c in planned if isinstance(c, Change)])
        return planned

    def state(self) -> WatchState:
        state = WatchState(self.state_path)
        state.load()
        return state


def published(planned) -> list[tuple[str, str]]:
    return [(c.event.op.value, c.event.doc_id) for c in planned if isinstance(c, Change) and c.event]


def skipped(planned) -> dict[str, str]:
    return {s.path.name: s.reason for s in planned if isinstance(s, SkippedFile)}


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    root = tmp_path / "docs"
    root.mkdir()
    return Folder(root, tmp_path / "state" / "docs.json")


def test_the_first_pass_publishes_every_document_with_its_relative_path(folder):
    folder.write("guides/setup.md", "# Setup\n\nRun make up.")
    folder.write("notes.txt", "plain notes")
    folder.write("image.png", b"\x89PNG")
    folder.write(".obsidian/app.md", "hidden")

    planned = folder.sync()

    assert published(planned) == [("upsert", "guides/setup.md"), ("upsert", "notes.txt")]
    event = next(c.event for c in planned if isinstance(c, Change) and c.event)
    assert event.content_type == "text/markdown" and event.content.startswith("# Setup")
    assert event.source == "file" and event.metadata["path"] == str(folder.root.resolve() / "guides/setup.md")


def test_a_namespace_prefixes_every_doc_id(tmp_path):
    folder = Folder(tmp_path / "docs", tmp_path / "state.json", namespace="wiki/")
    folder.write("a/b.md", "text")
    assert published(folder.sync()) == [("upsert", "wiki/a/b.md")]


def test_an_unchanged_folder_publishes_nothing(folder):
    folder.write("a.md", "alpha", age_s=60)
    folder.write("b.md", "beta")
    folder.sync()
    assert published(folder.sync()) == []
    assert published(folder.sync(trust_stat=False)) == []


def test_touching_a_file_or_rewriting_the_same_content_publishes_nothing(folder):
    path = folder.write("a.md", "alpha", age_s=60)
    folder.sync()
    os.utime(path)
    assert published(folder.sync()) == []
    path.write_text("alpha")
    assert published(folder.sync(trust_stat=False)) == []


def test_an_edit_is_an_upsert_with_a_higher_version(folder):
    path = folder.write("a.md", "alpha")
    first = published_events(folder.sync())
    path.write_text("alpha, edited")
    second = published_events(folder.sync())
    assert [(e.op, e.content) for e in second] == [(EventOp.UPSERT, "alpha, edited")]
    assert second[0].version > first[0].version


def published_events(planned):
    return [c.event for c in planned if isinstance(c, Change) and c.event]


def test_changes_made_while_no_watcher_ran_are_published_and_nothing_else(folder):
    folder.write("kept.md", "kept", age_s=60)
    edited = folder.write("edited.md", "before", age_s=60)
    removed = folder.write("removed.md", "gone soon", age_s=60)
    folder.write("renamed.md", "moving", age_s=60)
    folder.sync()

    edited.write_text("after")
    removed.unlink()
    (folder.root / "renamed.md").rename(folder.root / "moved.md")
    folder.write("new.md", "fresh")

    assert sorted(published(folder.sync())) == [
        ("delete", "removed.md"),
        ("delete", "renamed.md"),
        ("upsert", "edited.md"),
        ("upsert", "moved.md"),
        ("upsert", "new.md"),
    ]
    assert sorted(folder.state().files) == ["edited.md", "kept.md", "moved.md", "new.md"]


def test_a_removed_folder_deletes_every_document_in_it(folder):
    folder.write("guides/a.md", "a")
    folder.write("guides/deep/b.md", "b")
    folder.write("guidelines.md", "not inside")
    folder.sync()
    (folder.root / "guides" / "deep" / "b.md").unlink()
    (folder.root / "guides" / "deep").rmdir()
    (folder.root / "guides" / "a.md").unlink()
    (folder.root / "guides").rmdir()

    assert sorted(published(folder.sync("guides", trust_stat=False))) == [
        ("delete", "guides/a.md"),
        ("delete", "guides/deep/b.md"),
    ]


def test_a_folder_that_appears_is_read_whole(folder):
    folder.sync()
    folder.write("new/a.md", "a")
    folder.write("new/b/c.txt", "c")
    assert published(folder.sync("new", trust_stat=False)) == [
        ("upsert", "new/a.md"),
        ("upsert", "new/b/c.txt"),
    ]


def test_only_acknowledged_events_are_recorded(folder):
    folder.write("a.md", "alpha")
    assert published(folder.sync(acknowledged=False)) == [("upsert", "a.md")]
    assert published(folder.sync()) == [("upsert", "a.md")], "not acknowledged, so published again"
    assert published(folder.sync()) == []


def test_a_file_rewritten_within_the_same_timestamp_tick_is_not_missed(folder):
    path = folder.write("a.md", "version 1")
    folder.sync()
    mtime = path.stat().st_mtime_ns
    path.write_text("version 2")  # same size, and the same mtime on a coarse clock
    os.utime(path, ns=(mtime, mtime))
    assert published(folder.sync()) == [("upsert", "a.md")]


def test_binary_and_undecodable_files_are_skipped_with_a_reason(folder):
    folder.write("blob.txt", b"\x00\x01\x02binary")
    folder.write("latin1.md", "caf\xe9".encode("latin-1"))
    folder.write("empty.md", "  \n")
    planned = folder.sync()
    assert published(planned) == []
    reasons = skipped(planned)
    assert "binary" in reasons["blob.txt"]
    assert "not UTF-8" in reasons["latin1.md"]
    assert "empty" in reasons["empty.md"]


def test_a_file_above_the_size_limit_is_refused_and_its_old_text_withdrawn(folder):
    path = folder.write("big.md", "small at first")
    folder.write("huge.md", "x" * 200)
    planned = folder.sync(max_bytes=100)
    assert published(planned) == [("upsert", "big.md")]
    assert "200 bytes is above the limit of 100" in skipped(planned)["huge.md"]

    path.write_text("y" * 150)
    planned = folder.sync(max_bytes=100)
    assert published(planned) == [("delete", "big.md")]
    assert "above the limit" in skipped(planned)["big.md"]


def test_a_pdf_is_published_as_its_text(folder):
    folder.write("report.pdf", pdf_document("Quarterly lighthouse maintenance report.", "Lamp replaced."))
    [event] = published_events(folder.sync())
    assert event.doc_id == "report.pdf"
    assert "Quarterly lighthouse maintenance report." in event.content and "Lamp replaced." in event.content
    assert event.content_type == "text/plain"
    assert event.metadata["file_type"] == "application/pdf" and event.metadata["pages"] == 1


def test_a_broken_pdf_is_skipped_with_a_reason(folder):
    folder.write("broken.pdf", b"%PDF-1.4\nthis is no PDF")
    folder.write("blank.pdf", pdf_document())
    planned = folder.sync()
    assert published(planned) == []
    reasons = skipped(planned)
    assert "PDF" in reasons["broken.pdf"]
    assert "no extractable text" in reasons["blank.pdf"]


def test_a_symlink_leading_outside_the_folder_is_not_followed(folder, tmp_path):
    secret = tmp_path / "secret.md"
    secret.write_text("outside the watched folder")
    (folder.root / "link.md").symlink_to(secret)
    (folder.root / "outside").symlink_to(tmp_path, target_is_directory=True)
    planned = folder.sync()
    assert published(planned) == []
    assert "outside the watched folder" in skipped(planned)["link.md"]


def test_a_symlink_to_a_file_inside_the_folder_is_read(folder):
    folder.write("real.md", "the real text")
    (folder.root / "alias.md").symlink_to(folder.root / "real.md")
    (folder.root / "mirror").symlink_to(folder.root, target_is_directory=True)
    events = published_events(folder.sync())
    assert sorted((e.doc_id, e.content) for e in events) == [
        ("alias.md", "the real text"),
        ("real.md", "the real text"),
    ], "the symlinked folder is not followed"


def test_a_change_to_the_ignore_file_withdraws_what_it_now_ignores(folder):
    folder.write("keep.md", "keep")
    folder.write("drafts/idea.md", "idea")
    folder.sync()
    folder.write(IGNORE_FILE, "drafts/\n")
    assert published(folder.sync()) == [("delete", "drafts/idea.md")]
    (folder.root / IGNORE_FILE).unlink()
    assert published(folder.sync()) == [("upsert", "drafts/idea.md")]


def test_a_document_deleted_and_recreated_gets_a_higher_version_than_its_delete(folder):
    path = folder.write("a.md", "alpha")
    folder.sync()
    path.unlink()
    [delete] = published_events(folder.sync())
    folder.write("a.md", "alpha")
    [upsert] = published_events(folder.sync())
    assert delete.op is EventOp.DELETE and upsert.op is EventOp.UPSERT
    assert upsert.version > delete.version


def test_a_second_watcher_of_the_same_folder_is_refused(folder):
    with WatchState(folder.state_path), pytest.raises(WatchStateLocked):
        WatchState(folder.state_path).__enter__()


def test_an_unreadable_state_is_set_aside_and_everything_republished(folder, caplog):
    folder.write("a.md", "alpha")
    folder.sync()
    folder.state_path.write_text("{not json")
    assert published(folder.sync()) == [("upsert", "a.md")]
    assert folder.state_path.with_suffix(".corrupt").exists()
    assert "unreadable" in caplog.text


def test_each_folder_namespace_and_topic_has_its_own_state(tmp_path):
    root = tmp_path / "docs"
    paths = {
        state_file(tmp_path, root, None, "k:9092/docs.events"),
        state_file(tmp_path, root, "wiki", "k:9092/docs.events"),
        state_file(tmp_path, root, None, "k:9092/other.events"),
        state_file(tmp_path, tmp_path / "other", None, "k:9092/docs.events"),
    }
    assert len(paths) == 4
    assert state_file(tmp_path, root, None, "t") == state_file(tmp_path, root / "." / "x" / "..", None, "t")


def test_a_file_name_that_cannot_be_a_doc_id_is_skipped_and_the_rest_published(folder):
    folder.write(" leading space.md", "the name starts with a space")
    folder.write("tab\there.md", "the name holds a tab")
    os.close(os.open(os.fsencode(folder.root) + b"/caf\xe9.md", os.O_CREAT | os.O_WRONLY))
    folder.write("fine.md", "fine")
    planned = folder.sync()
    assert published(planned) == [("upsert", "fine.md")]
    reasons = skipped(planned)
    assert "doc_id" in reasons[" leading space.md"] and "doc_id" in reasons["tab\there.md"]
    assert "not valid UTF-8" in reasons["caf\udce9.md"]


def test_the_state_finds_what_lies_inside_a_folder_and_not_its_namesakes(tmp_path):
    with WatchState(tmp_path / "state.json") as state:
        for relative in ("a", "a b/c.md", "a.md", "a/x.md", "a/y/z.md", "ab/y.md", "b.md"):
            state.record(relative, TrackedFile("0" * 64, 1, None, 1))
        assert state.under("a") == ["a", "a/x.md", "a/y/z.md"]
        assert state.under("a/y") == ["a/y/z.md"]
        state.record("a/x.md", None)
        state.record("a/w.md", TrackedFile("0" * 64, 1, None, 2))
        assert state.under("a") == ["a", "a/w.md", "a/y/z.md"]
        assert len(state.under("")) == 7
