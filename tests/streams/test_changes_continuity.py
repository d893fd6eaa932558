"""Which offsets the changes stage must read itself because its consumer skipped them."""

from streams.changes.continuity import OffsetContinuity


def test_records_that_follow_on_skip_nothing():
    continuity = OffsetContinuity()
    continuity.start_at(0, 88)
    assert [list(continuity.skipped_before(0, offset)) for offset in (88, 89, 90)] == [[], [], []]


def test_a_jump_names_every_offset_in_between_once():
    continuity = OffsetContinuity()
    continuity.start_at(0, 88)
    continuity.skipped_before(0, 88)
    continuity.skipped_before(0, 89)
    assert list(continuity.skipped_before(0, 102)) == list(range(90, 102))
    assert list(continuity.skipped_before(0, 103)) == []


def test_the_first_record_is_checked_against_where_the_consumer_resumes():
    continuity = OffsetContinuity()
    continuity.start_at(3, 40)
    assert list(continuity.skipped_before(3, 43)) == [40, 41, 42]


def test_a_replay_after_seeking_back_skips_nothing_and_is_followed_from_there():
    continuity = OffsetContinuity()
    continuity.start_at(0, 10)
    continuity.skipped_before(0, 10)
    continuity.skipped_before(0, 11)
    assert list(continuity.skipped_before(0, 5)) == []
    assert list(continuity.skipped_before(0, 6)) == []
    assert list(continuity.skipped_before(0, 9)) == [7, 8]


def test_partitions_are_followed_apart_and_forgotten_when_revoked():
    continuity = OffsetContinuity()
    continuity.start_at(0, 0)
    continuity.start_at(1, 100)
    continuity.skipped_before(0, 0)
    assert list(continuity.skipped_before(1, 101)) == [100]
    continuity.forget([1])
    assert continuity.knows(0) and not continuity.knows(1)
