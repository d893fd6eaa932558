"""Index generations and the control records: names, roles, and folding the topic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import Settings
from schemas.generations import (
    ACTIVE_KEY,
    ActiveGeneration,
    ControlState,
    Generation,
    IndexShape,
    ReplicaReport,
    generation_key,
    replica_key,
)


def _settings() -> Settings:
    return Settings(collection="docs", chunks_topic="docs.chunks", consumer_group="indexer")


def test_generation_zero_keeps_the_settings_names_and_a_later_one_gets_its_own() -> None:
    base = _settings()
    zero = Generation.base(base).settings(base)
    assert (zero.collection, zero.chunks_topic, zero.consumer_group) == ("docs", "docs.chunks", "indexer")
    two = Generation(2, IndexShape("all-MiniLM-L6-v2", 400, 40, "fp32")).settings(base)
    names = (two.collection, two.chunks_topic, two.consumer_group)
    assert names == ("docs-g2", "docs.chunks.g2", "indexer-g2")
    assert (two.chunk_size, two.chunk_overlap, two.precision) == (400, 40, "fp32")
    # What a reindex does not change stays: the input topic and the searches' activity file.
    assert two.changes_topic == base.changes_topic
    assert two.search_activity_path == base.search_activity_path


def test_a_generation_with_an_invalid_shape_is_refused_when_its_settings_are_made() -> None:
    with pytest.raises(ValidationError):
        Generation(1, IndexShape("m", 10, 0, "fp32")).settings(_settings())


def test_records_fold_into_roles_active_building_and_kept() -> None:
    base = _settings()
    state = ControlState()
    assert state.roles() == {0: "active"}
    assert state.active_generation(base) == Generation.base(base)
    one = Generation(1, IndexShape("all-MiniLM-L6-v2", 500, 50, "auto"), 10.0)
    state.apply(generation_key(0), Generation.base(base).to_json())
    state.apply(generation_key(1), one.to_json())
    assert state.roles() == {0: "active", 1: "building"}
    assert state.building() == one
    assert state.next_number() == 2
    state.apply(ACTIVE_KEY, ActiveGeneration(1, previous=0, switched_at=20.0).to_json())
    assert state.roles() == {0: "kept", 1: "active"}
    assert state.building() is None
    assert state.active_generation(base) == one
    state.apply(generation_key(0), None)  # dropped after the keep period
    assert state.roles() == {1: "active"}
    assert state.generation(0, base) is None


def test_replica_heartbeats_are_live_only_while_recent() -> None:
    state = ControlState()
    state.apply(replica_key("a"), ReplicaReport("a", 0, (0, 1), at=100.0).to_json())
    state.apply(replica_key("b"), ReplicaReport("b", 0, (0,), at=50.0).to_json())
    assert [r.replica for r in state.live_replicas(now=105.0, within_s=15.0)] == ["a"]
    state.apply(replica_key("a"), None)
    assert state.live_replicas(now=105.0, within_s=15.0) == []


def test_unknown_keys_are_ignored() -> None:
    state = ControlState()
    state.apply(b"something-newer/1", b"{}")
    assert state.roles() == {0: "active"}
