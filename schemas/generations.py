"""Index generations, and the control records that say which one is active.

A generation is one complete way of indexing the documents: its embedding model, chunking and
precision (its ``IndexShape``), and the resources built with them, named by its number: a Chroma
collection, a chunk-log topic and a consumer group of its own. Generation 0 is the one the
settings name; a reindex builds generation n+1 from the compacted changes topic beside it.

The control topic (compacted, one partition) holds, by key:

- ``generation/<n>``: a generation that exists (a tombstone: it was dropped);
- ``active``: which generation answers searches, which one it replaced, and when;
- ``replica/<id>``: each API replica's heartbeat: the generation it serves, those it holds ready;
- ``search/*`` and ``search/<tenant>``: fusion parameters ``ragstream tune`` chose
  (:mod:`schemas.search_tuning`).

Every consumer process and API replica folds these records into a ``ControlState``; the record
under ``active`` is the single source of truth of which generation serves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from schemas.search_tuning import EVERY_TENANT, TUNING_PREFIX, TunedFusion
from schemas.settings import Settings

__all__ = [
    "ACTIVE_KEY",
    "ActiveGeneration",
    "ControlState",
    "Generation",
    "GenerationRole",
    "IndexShape",
    "ReplicaReport",
    "generation_key",
    "replica_key",
]

ACTIVE_KEY = b"active"
_GENERATION_PREFIX = "generation/"
_REPLICA_PREFIX = "replica/"

#: What a generation is to the processes that follow it: the one that serves, one being built,
#: or the one switched away from, kept current for a rollback until it is dropped.
GenerationRole = Literal["active", "building", "kept"]


def generation_key(number: int) -> bytes:
    return f"{_GENERATION_PREFIX}{number}".encode()


def replica_key(replica: str) -> bytes:
    return f"{_REPLICA_PREFIX}{replica}".encode()


@dataclass(frozen=True)
class IndexShape:
    """The settings a reindex may change: everything that decides what the index holds."""

    model: str
    chunk_size: int
    chunk_overlap: int
    precision: str

    @classmethod
    def of(cls, settings: Settings) -> IndexShape:
        return cls(settings.model, settings.chunk_size, settings.chunk_overlap, settings.precision)

    def describe(self) -> str:
        return (
            f"model {self.model}, chunks of {self.chunk_size} characters "
            f"(overlap {self.chunk_overlap}), precision {self.precision}"
        )


@dataclass(frozen=True)
class Generation:
    number: int
    shape: IndexShape
    created_at: float = field(default_factory=time.time)

    @classmethod
    def base(cls, settings: Settings) -> Generation:
        """Generation 0 as the settings describe it (before any reindex wrote its record)."""
        return cls(0, IndexShape.of(settings), 0.0)

    def settings(self, base: Settings) -> Settings:
        """``base`` with this generation's shape and its own collection, chunk log and consumer
        group. Generation 0 keeps the names the settings give; generation n appends ``-g<n>`` to
        the collection and the consumer group, ``.g<n>`` to the chunk-log topic. The search
        activity file stays the base's, so every generation's consumers see the same searches."""
        update: dict[str, Any] = asdict(self.shape) | {"search_activity_file": base.search_activity_path}
        if self.number:
            update |= {
                "collection": f"{base.collection}-g{self.number}",
                "chunks_topic": f"{base.chunks_topic}.g{self.number}",
                "consumer_group": f"{base.consumer_group}-g{self.number}",
            }
        # Validated like any settings: a chunk overlap larger than the size fails here.
        return type(base).model_validate(base.model_dump() | update)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"number": self.number, "shape": asdict(self.shape), "created_at": self.created_at}
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Generation:
        data = orjson.loads(raw)
        return cls(int(data["number"]), IndexShape(**data["shape"]), float(data["created_at"]))


@dataclass(frozen=True)
class ActiveGeneration:
    """The record under ``active``: the generation that serves, and the one it replaced."""

    generation: int
    previous: int | None = None
    switched_at: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> ActiveGeneration:
        data = orjson.loads(raw)
        return cls(int(data["generation"]), data.get("previous"), float(data.get("switched_at", 0.0)))


@dataclass(frozen=True)
class ReplicaReport:
    """An API replica's heartbeat: what it serves, and the generations whose views it holds
    caught up (a switch waits until every live replica holds the new one)."""

    replica: str
    serving: int
    ready: tuple[int, ...]
    at: float

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> ReplicaReport:
        data = orjson.loads(raw)
        return cls(str(data["replica"]), int(data["serving"]), tuple(data["ready"]), float(data["at"]))


@dataclass
class ControlState:
    """The control topic folded, record after record, into what it says now."""

    generations: dict[int, Generation] = field(default_factory=dict)
    active: ActiveGeneration = field(default_factory=lambda: ActiveGeneration(0))
    replicas: dict[str, ReplicaReport] = field(default_factory=dict)
    #: scope (``*`` or a tenant) → the fusion parameters tuned for it
    tuned: dict[str, TunedFusion] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record in; an unknown key is ignored (a newer writer's record)."""
        name = (key or b"").decode("utf-8", "replace")
        if key == ACTIVE_KEY:
            self.active = ActiveGeneration.from_json(value) if value is not None else ActiveGeneration(0)
        elif name.startswith(_GENERATION_PREFIX):
            number = int(name[len(_GENERATION_PREFIX) :])
            if value is None:
                self.generations.pop(number, None)
            else:
                self.generations[number] = Generation.from_json(value)
        elif name.startswith(_REPLICA_PREFIX):
            replica = name[len(_REPLICA_PREFIX) :]
            if value is None:
                self.replicas.pop(replica, None)
            else:
                self.replicas[replica] = ReplicaReport.from_json(value)
        elif name.startswith(TUNING_PREFIX):
            scope = name[len(TUNING_PREFIX) :]
            if value is None:
                self.tuned.pop(scope, None)
            else:
                self.tuned[scope] = TunedFusion.from_json(value)

    def tuned_for(self, tenant: str | None) -> TunedFusion | None:
        """The parameters a search of ``tenant`` (None: a caller without one) uses: the tenant's
        own, else those of every tenant, else None (the configured ones)."""
        if tenant is not None and tenant in self.tuned:
            return self.tuned[tenant]
        return self.tuned.get(EVERY_TENANT)

    def generation(self, number: int, settings: Settings) -> Generation | None:
        """Generation ``number``'s record; generation 0 is the settings' while it is active and
        no reindex wrote its record (after a switch away, its record is what keeps it)."""
        if number in self.generations:
            return self.generations[number]
        return Generation.base(settings) if number == 0 == self.active.generation else None

    def active_generation(self, settings: Settings) -> Generation:
        found = self.generation(self.active.generation, settings)
        if found is None:
            raise LookupError(f"the active generation {self.active.generation} has no record")
        return found

    def roles(self) -> dict[int, GenerationRole]:
        """Every generation that exists, with its role; the active one always among them."""
        numbers = sorted({self.active.generation, *self.generations})
        return {n: role for n in numbers if (role := self.role_of(n)) is not None}

    def role_of(self, number: int) -> GenerationRole | None:
        """``number``'s role, or None if it does not exist (never made, or dropped)."""
        if number == self.active.generation:
            return "active"
        if number not in self.generations:
            return None
        return "kept" if number == self.active.previous else "building"

    def building(self) -> Generation | None:
        """The generation being built, if any (``ragstream reindex`` starts one at a time)."""
        found = [g for n, g in sorted(self.generations.items()) if self.role_of(n) == "building"]
        return found[-1] if found else None

    def next_number(self) -> int:
        return max([self.active.generation, *self.generations]) + 1

    def live_replicas(self, now: float, within_s: float) -> list[ReplicaReport]:
        """Replicas whose last heartbeat is at most ``within_s`` old."""
        return [r for r in self.replicas.values() if now - r.at <= within_s]
