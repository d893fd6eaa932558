"""All configuration in one frozen object, read from ``RAGSTREAM_*`` environment variables.

Built once in each entry point and passed down; nothing reads the environment at import. The
settings are grouped by concern in :mod:`schemas.settings_groups`; ``Settings`` is every group
together, and docs/configuration.md lists them (``python -m schemas.configuration_doc``).
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from schemas.settings_groups import (
    AnswerSettings,
    ApiSettings,
    ChromaSettings,
    ConsumerSettings,
    EmbeddingSettings,
    KafkaSettings,
    QueryModelSettings,
    ReindexSettings,
    ReplicaViewSettings,
    RuntimeSettings,
    ScalingSettings,
    SearchSettings,
    SecuritySettings,
    SettingsGroup,
    StageSettings,
    WatcherSettings,
)

__all__ = ["SETTINGS_GROUPS", "Settings"]

#: Kafka refuses longer topic names.
_MAX_TOPIC_NAME = 249


class Settings(
    KafkaSettings,
    ChromaSettings,
    EmbeddingSettings,
    ConsumerSettings,
    ScalingSettings,
    StageSettings,
    WatcherSettings,
    ApiSettings,
    SecuritySettings,
    QueryModelSettings,
    SearchSettings,
    ReplicaViewSettings,
    AnswerSettings,
    ReindexSettings,
    RuntimeSettings,
):
    """Every setting of every process: the groups, in the order docs/configuration.md lists them."""

    @property
    def input_topic(self) -> str:
        """The topic the indexing consumers subscribe to."""
        return self.changes_topic if self.consumer_input == "changes" else self.events_topic

    @property
    def search_activity_path(self) -> Path:
        """The file that says searches are running on this host (``search_activity_file``)."""
        if self.search_activity_file is not None:
            return self.search_activity_file
        return _default_search_activity_path(self.bootstrap_servers, self.collection)

    def namespaced(self, prefix: str) -> Settings:
        """A copy whose topics, consumer groups and collection are its own, all named by ``prefix``.

        The collection is ``prefix``; the topics ``prefix.events``, ``.changes``, ``.chunks``,
        ``.dlq``, ``.stats`` and ``.feedback``; the groups ``prefix-indexer`` (consumers) and
        ``prefix-changes`` (the changes stage). Everything else is kept, the broker and Chroma
        included, so that runs on one broker and one Chroma server never see each other's data.
        The prefix must be a valid collection name, and unique per run (add a random suffix).
        """
        update: dict[str, Any] = {
            "collection": prefix,
            "events_topic": f"{prefix}.events",
            "changes_topic": f"{prefix}.changes",
            "chunks_topic": f"{prefix}.chunks",
            "dlq_topic": f"{prefix}.dlq",
            "stats_topic": f"{prefix}.stats",
            "feedback_topic": f"{prefix}.feedback",
            "control_topic": f"{prefix}.control",
            "consumer_group": f"{prefix}-indexer",
            "streams_app_id": f"{prefix}-changes",
        }
        longest = max((update[name] for name in update if name.endswith("_topic")), key=len)
        if len(longest) > _MAX_TOPIC_NAME:
            raise ValueError(f"prefix {prefix!r} makes topic names longer than Kafka's {_MAX_TOPIC_NAME}")
        # Validated like any settings (model_copy would not check the collection's pattern); from
        # these values only, the environment is not read again.
        return type(self).model_validate(self.model_dump() | update)


#: Every group, in the order docs/configuration.md lists them.
SETTINGS_GROUPS: tuple[type[SettingsGroup], ...] = tuple(
    base for base in Settings.__bases__ if issubclass(base, SettingsGroup)
)


@functools.lru_cache(maxsize=16)
def _default_search_activity_path(bootstrap_servers: str, collection: str) -> Path:
    # Cached: the search route asks for it on every request. The API and the consumers of one
    # stack share the broker and the collection, and two stacks on one host share neither.
    digest = hashlib.sha256(f"{bootstrap_servers}\x00{collection}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ragstream-searching-{digest}"
