"""API keys of the query API: how a key is made, and the hashed entry the server is configured with.

The server is given only ``sha256:<hex digest of the key>``, optionally bound to a tenant as
``sha256:<hex>@<tenant>``, so that configuration files, environment dumps and logs never hold a
key that lets anyone in. An unsalted SHA-256 is enough here: the keys are 256 random bits, not
passwords a dictionary could guess.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.events import TENANT_PATTERN

__all__ = ["ApiKeyEntry", "hash_api_key", "match_api_key", "new_api_key", "parse_api_key_entries"]

#: Marks ragstream keys, so that a leaked one is recognisable (e.g. by secret scanners).
KEY_PREFIX = "rsk_"

_ENTRY = re.compile(r"sha256:(?P<digest>[0-9a-fA-F]{64})(?:@(?P<tenant>[^@]*))?")
_TENANT = re.compile(TENANT_PATTERN)


@dataclass(frozen=True)
class ApiKeyEntry:
    """One configured key: the SHA-256 digest of the key, and the tenant it is bound to, if any."""

    digest: str
    #: None: the key sees every document (an administrator's key).
    tenant: str | None = None

    @classmethod
    def parse(cls, entry: str) -> ApiKeyEntry:
        """Read ``sha256:<64 hex digits>`` or ``sha256:<64 hex digits>@<tenant>``."""
        text = entry.strip()
        match = _ENTRY.fullmatch(text)
        if match is None:
            if text.startswith(KEY_PREFIX):
                raise ValueError(
                    "this is a key itself, which the server must not be given: configure its hash, "
                    "from `ragstream api-key hash`"
                )
            raise ValueError(
                "an API key entry must read sha256:<64 hex digits> or sha256:<64 hex digits>@<tenant>; "
                "`ragstream api-key new` prints one"
            )
        return cls(match["digest"].lower(), _checked_tenant(match["tenant"]))

    @classmethod
    def for_key(cls, key: str, tenant: str | None = None) -> ApiKeyEntry:
        """The entry that admits ``key``, bound to ``tenant``."""
        return cls(hash_api_key(key), _checked_tenant(tenant))

    def __str__(self) -> str:
        return f"sha256:{self.digest}" + (f"@{self.tenant}" if self.tenant is not None else "")


def _checked_tenant(tenant: str | None) -> str | None:
    if tenant is not None and not _TENANT.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r} must match {TENANT_PATTERN}")
    return tenant


def parse_api_key_entries(text: str) -> tuple[ApiKeyEntry, ...]:
    """Entries separated by commas or whitespace, as in ``RAGSTREAM_API_KEYS``."""
    return tuple(ApiKeyEntry.parse(part) for part in re.split(r"[,\s]+", text) if part)


def hash_api_key(key: str) -> str:
    """The hex SHA-256 digest of a key, as configured."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    """A fresh random key: 256 bits from the OS's secure generator."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def match_api_key(key: str, entries: Iterable[ApiKeyEntry]) -> ApiKeyEntry | None:
    """The entry ``key`` hashes to, or None.

    Every entry is compared, in constant time, whatever matched before: how long a check takes
    says nothing about how close a guess came or which entry it hit.
    """
    digest = hash_api_key(key).encode()
    found = None
    for entry in entries:
        if hmac.compare_digest(digest, entry.digest.encode()):
            found = entry
    return found
