"""Consumers see the searches the API on their host served, through the file it touches."""

from __future__ import annotations

import os
import time
from pathlib import Path

from consumers.search_activity import SearchActivity
from query_api.search_activity import note_search
from schemas import Settings


def test_a_search_noted_by_the_api_is_seen_by_the_consumers(tmp_path: Path) -> None:
    path = tmp_path / "searching"
    activity = SearchActivity(path, window_s=2.0)
    assert not activity.searching()

    note_search(path)

    assert SearchActivity(path, window_s=2.0).searching()


def test_searches_older_than_the_window_are_not_running_any_more(tmp_path: Path) -> None:
    path = tmp_path / "searching"
    path.touch()
    three_seconds_ago = time.time() - 3
    os.utime(path, (three_seconds_ago, three_seconds_ago))

    assert not SearchActivity(path, window_s=2.0).searching()
    assert SearchActivity(path, window_s=5.0).searching()


def test_the_window_closes_without_a_new_look_at_the_file(tmp_path: Path) -> None:
    path = tmp_path / "searching"
    path.touch()
    wall = [time.time()]
    activity = SearchActivity(path, window_s=2.0, clock=lambda: 0.0, wall_clock=lambda: wall[0])
    assert activity.searching()

    wall[0] += 2.5

    assert not activity.searching()


def test_the_file_is_read_at_most_every_half_second(tmp_path: Path) -> None:
    path = tmp_path / "searching"
    now = [0.0]
    activity = SearchActivity(path, window_s=2.0, clock=lambda: now[0])
    assert not activity.searching()
    path.touch()

    now[0] += 0.4
    assert not activity.searching()
    now[0] += 0.2
    assert activity.searching()


def test_the_api_touches_the_file_at_most_every_half_second(tmp_path: Path) -> None:
    path = tmp_path / "searching"
    note_search(path)
    long_ago = time.time() - 100
    os.utime(path, (long_ago, long_ago))

    note_search(path)

    assert path.stat().st_mtime == long_ago


def test_two_stacks_on_one_host_watch_different_files_and_a_stacks_api_and_consumers_the_same() -> None:
    one = Settings(bootstrap_servers="127.0.0.1:9092", collection="docs")
    other = Settings(bootstrap_servers="127.0.0.1:19092", collection="docs")

    assert one.search_activity_path != other.search_activity_path
    assert (
        Settings(bootstrap_servers="127.0.0.1:9092", collection="docs").search_activity_path
        == one.search_activity_path
    )
    assert Settings(search_activity_file=Path("/run/x")).search_activity_path == Path("/run/x")
