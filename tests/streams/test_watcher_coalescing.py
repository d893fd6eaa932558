"""How the folder watcher turns bursts of notifications into one look per path."""

from streams.watch_sync import covering
from streams.watcher import Coalescer


def test_a_burst_of_changes_to_one_path_is_one_due_path_once_quiet():
    pending = Coalescer(settle=0.3, max_delay=5)
    for t in (0.0, 0.05, 0.1, 0.2):  # an editor's save: rename, write, chmod, …
        pending.add(["notes.md"], now=t)
    assert pending.pop_due(now=0.45) == []
    assert pending.pop_due(now=0.5) == ["notes.md"]
    assert len(pending) == 0 and pending.next_due() is None


def test_each_path_has_its_own_quiet_time():
    pending = Coalescer(settle=0.3, max_delay=5)
    pending.add(["a.md"], now=0.0)
    pending.add(["b.md"], now=0.2)
    assert pending.next_due() == 0.3
    assert pending.pop_due(now=0.3) == ["a.md"]
    assert pending.pop_due(now=0.5) == ["b.md"]


def test_a_path_that_never_goes_quiet_is_due_after_the_longest_delay():
    pending = Coalescer(settle=0.3, max_delay=1.0)
    due = []
    for step in range(30):  # appended to every 100 ms
        now = step / 10
        pending.add(["app.log.txt"], now=now)
        due += [(now, path) for path in pending.pop_due(now)]
    assert due[0] == (1.0, "app.log.txt")
    assert len(due) == 2, "due again a max delay after the first change that followed"


def test_a_changed_folder_covers_the_changes_inside_it():
    pending = Coalescer(settle=0.1, max_delay=1)
    pending.add(["guides/setup.md", "guides", "guides/deep/x.md", "guidelines.md"], now=0)
    assert pending.pop_due(now=1) == ["guidelines.md", "guides"]


def test_a_due_folder_takes_its_pending_files_along():
    pending = Coalescer(settle=0.3, max_delay=5)
    pending.add(["guides"], now=0)
    pending.add(["guides/setup.md"], now=0.2)
    assert pending.pop_due(now=0.3) == ["guides"]
    assert len(pending) == 0


def test_stopping_takes_every_pending_path_whether_quiet_or_not():
    pending = Coalescer(settle=10, max_delay=60)
    pending.add(["a.md", "b/c.md"], now=0)
    assert pending.pop_due(now=1) == []
    assert pending.pop_all() == ["a.md", "b/c.md"]
    assert len(pending) == 0


def test_a_deferred_path_waits_for_its_retry_time():
    pending = Coalescer(settle=0.1, max_delay=1)
    pending.defer(["a.md"], until=5.0)
    assert pending.pop_due(now=4.9) == []
    assert pending.pop_due(now=5.0) == ["a.md"]


def test_the_root_covers_everything():
    assert covering(["a.md", "", "b/c.md"]) == [""]
    assert covering(["b/c.md", "b", "a.md", "a.md"]) == ["a.md", "b"]


def test_a_folder_covers_only_its_own_files_not_its_namesakes():
    assert covering(["a", "a b/c.md", "a.md", "a/x.md", "ab/y.md"]) == ["a", "a b/c.md", "a.md", "ab/y.md"]
