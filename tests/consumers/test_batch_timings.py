"""Per-part timings add up across batches and reach the stats message."""

import orjson

from consumers import batch_timings
from consumers.batch_timings import CRITICAL_PATH, BatchTimings
from consumers.indexer import BatchResult
from consumers.stats import ConsumerCounters


def test_a_measured_block_adds_its_wall_time_to_its_part(monkeypatch):
    clock = iter([10.0, 10.25, 20.0, 20.5])
    monkeypatch.setattr(batch_timings.time, "perf_counter", lambda: next(clock))
    timings = BatchTimings()
    with timings.measure("encode"):
        pass
    with timings.measure("encode"):
        pass
    assert timings.encode == 0.75 and timings.chroma_write == 0.0


def test_the_critical_path_leaves_out_the_writes_that_overlap_the_next_plan():
    timings = BatchTimings(queue_wait=0.1, encode=2.0, write_wait=0.3, chroma_write=0.4, commit=0.05)
    assert abs(timings.critical_path() - 2.4) < 1e-9
    assert "chroma_write" not in CRITICAL_PATH and "encode" in CRITICAL_PATH
    assert timings.summary().startswith("queue_wait 0.100s encode 2.000s write_wait 0.300s")


def test_stats_sum_every_batch_timings_into_the_published_message():
    stats = ConsumerCounters()
    stats.record_batch(3, 0, BatchResult(chunks_embedded=5), 1.0, BatchTimings(encode=0.5, diff=0.1))
    stats.record_batch(2, 0, BatchResult(chunks_embedded=1), 1.0, BatchTimings(encode=0.25, commit=0.2))
    message = orjson.loads(stats.to_json())
    assert message["part_seconds"]["encode"] == 0.75
    assert message["part_seconds"]["diff"] == 0.1 and message["part_seconds"]["commit"] == 0.2
    assert message["chunks_embedded"] == 6


def test_the_query_api_reads_a_message_with_timings_as_before():
    from schemas.stats import ConsumerStats as PublishedStats

    stats = ConsumerCounters()
    stats.record_batch(3, 1, BatchResult(chunks_embedded=5), 0.3, BatchTimings(encode=0.2))
    read = PublishedStats.model_validate(orjson.loads(stats.to_json()))
    assert (read.events_consumed, read.events_dead_lettered, read.chunks_embedded) == (3, 1, 5)
    assert read.batch_seconds_buckets["0.5"] == 1
