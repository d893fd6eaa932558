"""The settings grouped by concern: every setting in one group, every group a part of Settings."""

from __future__ import annotations

import pytest

from schemas import Settings
from schemas.settings import SETTINGS_GROUPS
from schemas.settings_groups import KafkaSettings, SearchSettings


def test_every_setting_belongs_to_exactly_one_group() -> None:
    owners: dict[str, list[str]] = {}
    for group in SETTINGS_GROUPS:
        for name in group.model_fields:
            owners.setdefault(name, []).append(group.__name__)
    assert owners.keys() == Settings.model_fields.keys()
    assert {name: groups for name, groups in owners.items() if len(groups) > 1} == {}


def test_settings_is_made_of_the_groups_alone() -> None:
    assert Settings.__bases__ == SETTINGS_GROUPS
    assert all(isinstance(Settings(), group) for group in SETTINGS_GROUPS)


def test_every_setting_says_what_it_does() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_a_group_reads_its_settings_from_the_same_variables_as_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAGSTREAM_BOOTSTRAP_SERVERS", "broker-9:9092")
    monkeypatch.setenv("RAGSTREAM_MAX_DOCUMENT_BYTES", "2048")
    monkeypatch.setenv("RAGSTREAM_HYBRID_FUSION", "rrf")
    kafka, search, settings = KafkaSettings(), SearchSettings(), Settings()
    assert kafka.bootstrap_servers == settings.bootstrap_servers == "broker-9:9092"
    assert kafka.max_record_bytes == settings.max_record_bytes == 2048 + 1024 * 1024
    assert search.hybrid_fusion == settings.hybrid_fusion == "rrf"


def test_a_group_ignores_the_settings_of_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSTREAM_HYBRID_FUSION", "rrf")
    assert not hasattr(KafkaSettings(), "hybrid_fusion")


def test_settings_stay_frozen() -> None:
    with pytest.raises(ValueError):
        Settings().partitions = 2
