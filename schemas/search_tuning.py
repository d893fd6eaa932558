"""Fusion parameters tuned for one deployment (``ragstream tune``), as the control topic holds them.

Under the key ``search/*`` the parameters every search uses, under ``search/<tenant>`` those of
one tenant's searches (a tenant without its own uses ``search/*``); no record = the configured
``RAGSTREAM_HYBRID_VECTOR_PRIOR``. Each record is one version, with what was measured when it was
chosen and the versions it replaced, so that a rollback needs nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

__all__ = ["EVERY_TENANT", "MAX_KEPT_VERSIONS", "TUNING_PREFIX", "TunedFusion", "tuning_key"]

TUNING_PREFIX = "search/"
#: The scope of parameters that apply to every search without a tenant's own.
EVERY_TENANT = "*"
#: Older versions kept inside a record, for rollbacks.
MAX_KEPT_VERSIONS = 10


def tuning_key(tenant: str | None) -> bytes:
    return f"{TUNING_PREFIX}{tenant or EVERY_TENANT}".encode()


@dataclass(frozen=True)
class TunedFusion:
    """One version of the convex fusion's vector prior for a scope (every tenant, or one)."""

    version: int
    vector_prior: float
    #: None = every tenant without parameters of its own.
    tenant: str | None
    tuned_at: float
    #: Where the judged queries came from: "feedback", or a candidates file of `ragstream eval`.
    source: str
    #: Held-out queries of the cross-validation, and their mean nDCG@10 with each prior.
    held_out_queries: int
    default_ndcg: float
    tuned_ndcg: float
    #: The versions this one replaced, newest first (at most ``MAX_KEPT_VERSIONS``).
    previous: tuple[TunedFusion, ...] = ()

    def replacing(self, current: TunedFusion | None) -> TunedFusion:
        """This version as the successor of ``current`` (numbered after it, keeping it)."""
        if current is None:
            return self
        kept = (current.without_history(), *current.previous)[:MAX_KEPT_VERSIONS]
        return TunedFusion(**{**self._fields(), "version": current.version + 1, "previous": kept})

    def rolled_back(self) -> TunedFusion | None:
        """The version before this one, with the rest of the history; None if there is none."""
        if not self.previous:
            return None
        before, *older = self.previous
        return TunedFusion(**{**before._fields(), "previous": tuple(older)})

    def without_history(self) -> TunedFusion:
        return TunedFusion(**{**self._fields(), "previous": ()})

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> TunedFusion:
        return cls._from_dict(orjson.loads(raw))

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> TunedFusion:
        return cls(**{**data, "previous": tuple(cls._from_dict(item) for item in data.get("previous", ()))})

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
