"""Which paths the folder watcher leaves out: defaults, and .ragstreamignore in gitignore syntax."""

import logging

import pytest

from streams.ignore import IGNORE_FILE, IgnoreRules


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD.md",
        "sub/.git/notes.md",
        ".hidden.md",
        "notes/.draft.md",
        ".obsidian/workspace.md",
        "notes.md.swp",
        "notes.md.swx",
        "notes.md~",
        ".#notes.md",
        "#notes.md#",
        "sub/4913",
        "upload.tmp",
        IGNORE_FILE,
    ],
)
def test_default_rules_leave_out_git_hidden_and_editor_temp_files(path):
    assert IgnoreRules().ignores(path)


@pytest.mark.parametrize("path", ["notes.md", "guides/setup.md", "a#b.md", "4913.md", "tmp/file.txt"])
def test_default_rules_keep_ordinary_documents(path):
    assert not IgnoreRules().ignores(path)


def rules(*lines: str) -> IgnoreRules:
    return IgnoreRules(list(lines))


def test_a_glob_matches_at_any_depth():
    ignore = rules("*.log.md")
    assert ignore.ignores("a.log.md") and ignore.ignores("deep/down/b.log.md")
    assert not ignore.ignores("a.md")


def test_a_leading_slash_anchors_a_pattern_to_the_root():
    ignore = rules("/drafts.md")
    assert ignore.ignores("drafts.md")
    assert not ignore.ignores("sub/drafts.md")


def test_double_star_matches_any_number_of_folders():
    ignore = rules("docs/**/internal.md", "**/generated/")
    assert ignore.ignores("docs/internal.md") and ignore.ignores("docs/a/b/internal.md")
    assert not ignore.ignores("other/internal.md")
    assert ignore.ignores("generated/api.md") and ignore.ignores("x/y/generated/api.md")


def test_a_pattern_ending_in_a_slash_matches_folders_only():
    ignore = rules("build/")
    assert ignore.ignores("build", is_dir=True)
    assert ignore.ignores("build/index.html") and ignore.ignores("src/build/index.html")
    assert not ignore.ignores("build"), "a file named build is not a folder"


def test_negation_takes_a_file_back():
    ignore = rules("*.txt", "!keep.txt")
    assert ignore.ignores("notes.txt")
    assert not ignore.ignores("keep.txt") and not ignore.ignores("sub/keep.txt")


def test_a_file_inside_an_ignored_folder_cannot_be_taken_back_as_in_git():
    ignore = rules("logs/", "!logs/keep.md", "cache/*", "!cache/keep.md")
    assert ignore.ignores("logs/keep.md")
    # cache/* ignores the files, not the folder, so one of them can come back.
    assert not ignore.ignores("cache/keep.md") and ignore.ignores("cache/other.md")


def test_comments_blank_lines_and_escaped_hashes():
    ignore = rules("# private notes", "", "   ", r"\#literal.md")
    assert not ignore.ignores("private notes") and not ignore.ignores("# private notes")
    assert ignore.ignores("#literal.md")


def test_the_ignore_file_can_take_back_a_hidden_folder_but_never_git():
    ignore = rules("!.github/", "!.git/")
    assert not ignore.ignores(".github/guide.md")
    assert ignore.ignores(".git/description.md")


def test_rules_are_read_from_the_ignore_file_at_the_root(tmp_path):
    (tmp_path / IGNORE_FILE).write_text("drafts/\n*.html\n!index.html\n")
    ignore = IgnoreRules.load(tmp_path)
    assert ignore.ignores("drafts/idea.md") and ignore.ignores("page.html")
    assert not ignore.ignores("index.html") and not ignore.ignores("notes.md")


def test_without_an_ignore_file_the_defaults_apply(tmp_path):
    ignore = IgnoreRules.load(tmp_path)
    assert ignore.patterns == []
    assert ignore.ignores(".hidden.md") and not ignore.ignores("notes.md")


def test_an_unreadable_ignore_file_is_reported_and_the_defaults_apply(tmp_path, caplog):
    (tmp_path / IGNORE_FILE).write_bytes(b"caf\xe9/\n")
    with caplog.at_level(logging.WARNING):
        ignore = IgnoreRules.load(tmp_path)
    assert ignore.patterns == [] and IGNORE_FILE in caplog.text
