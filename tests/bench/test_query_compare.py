"""The comparison bench's own parts: each version's tree, and the medians it reports."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import query_compare

REPO = Path(__file__).resolve().parents[2]


def test_a_revision_is_checked_out_apart_and_the_dot_is_the_working_tree(tmp_path: Path) -> None:
    commit = git("rev-parse", "--short", "HEAD").strip()
    try:
        trees = query_compare.checkouts([".", "HEAD"], tmp_path)

        assert list(trees) == ["working tree", f"HEAD ({commit})"]
        assert trees["working tree"] == REPO
        # The API started from that folder imports that version's code.
        tree = trees[f"HEAD ({commit})"]
        assert (tree / "query_api" / "app.py").read_text() == git("show", "HEAD:query_api/app.py")
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tmp_path / commit)], cwd=REPO, check=False
        )


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_the_median_of_rounds_is_taken_percentile_by_percentile() -> None:
    rounds = [
        {"p50": 10.0, "p95": 30.0, "p99": 90.0},
        {"p50": 12.0, "p95": 20.0, "p99": 40.0},
        {"p50": 11.0, "p95": 25.0, "p99": 45.0},
    ]
    assert query_compare._median(rounds) == {"p50": 11.0, "p95": 25.0, "p99": 45.0}


def test_the_tables_print_each_version_phase_and_round(capsys: pytest.CaptureFixture[str]) -> None:
    run = {
        "latency_ms": {"p50": 11.0, "p95": 20.0, "p99": 40.0},
        "steps_ms": {"embed": {"p50": 6.0, "p95": 9.0, "p99": 30.0}},
    }
    slow = {"latency_ms": {"p50": 16.0, "p95": 40.0, "p99": 80.0}, "steps_ms": {}}
    query_compare.print_tables({"old": {"25/s": [slow, slow]}, "new": {"25/s": [run, run]}})

    out = capsys.readouterr().out
    assert "11.0 / 20.0 / 40.0" in out and "16.0 / 40.0 / 80.0" in out
    assert "met" in out and "missed" in out
    assert "6.0 / 30.0" in out


def test_a_version_with_replicas_shares_its_revisions_tree_and_says_how_many(tmp_path: Path) -> None:
    versions = [".", ".@2", "HEAD", "HEAD@2"]
    trees: dict[str, Path] = {}
    try:
        trees = query_compare.checkouts(versions, tmp_path)
        names = list(trees)
        assert names[0] == "working tree" and names[1] == "working tree @ 2 Serve replicas"
        assert trees[names[0]] == trees[names[1]] == query_compare.REPO
        assert trees[names[2]] == trees[names[3]] != query_compare.REPO
        assert names[3] == f"{names[2]} @ 2 Serve replicas"
        assert list(query_compare.replicas_of(versions).values()) == [0, 2, 0, 2]
    finally:
        for tree in set(trees.values()) - {query_compare.REPO}:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
