"""API key entries: the hashed form the server is configured with, and matching a key against it."""

from __future__ import annotations

import hashlib

import pytest

from schemas.api_keys import ApiKeyEntry, match_api_key, new_api_key, parse_api_key_entries
from schemas.settings import Settings

DIGEST = hashlib.sha256(b"rsk_example").hexdigest()


def test_an_entry_reads_a_digest_and_an_optional_tenant() -> None:
    assert ApiKeyEntry.parse(f"sha256:{DIGEST}") == ApiKeyEntry(DIGEST, None)
    assert ApiKeyEntry.parse(f" sha256:{DIGEST.upper()}@acme ") == ApiKeyEntry(DIGEST, "acme")
    assert str(ApiKeyEntry(DIGEST, "acme")) == f"sha256:{DIGEST}@acme"


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("rsk_example", "is a key itself"),
        (DIGEST, "sha256:<64 hex digits>"),
        (f"sha256:{DIGEST[:-1]}", "sha256:<64 hex digits>"),
        (f"md5:{DIGEST}", "sha256:<64 hex digits>"),
        (f"sha256:{DIGEST}@", "tenant ''"),
        (f"sha256:{DIGEST}@a/b", "tenant 'a/b'"),
    ],
)
def test_a_malformed_entry_is_refused_saying_what_is_expected(entry: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        ApiKeyEntry.parse(entry)


def test_a_key_matches_the_entry_made_for_it_and_no_other() -> None:
    acme, globex, admin = new_api_key(), new_api_key(), new_api_key()
    entries = [
        ApiKeyEntry.for_key(acme, "acme"),
        ApiKeyEntry.for_key(globex, "globex"),
        ApiKeyEntry.for_key(admin),
    ]

    assert match_api_key(acme, entries) == entries[0]
    assert match_api_key(admin, entries) == entries[2]
    assert match_api_key(acme + "x", entries) is None
    assert match_api_key(entries[0].digest, entries) is None


def test_new_keys_are_random_and_recognisable() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("rsk_") and len(key) > 40 for key in keys)


def test_the_setting_reads_comma_or_space_separated_entries_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    monkeypatch.setenv("RAGSTREAM_API_KEYS", f"sha256:{DIGEST}@acme, sha256:{other}\n")

    assert Settings().api_keys == (ApiKeyEntry(DIGEST, "acme"), ApiKeyEntry(other, None))
    assert parse_api_key_entries("") == ()


def test_without_the_setting_no_keys_are_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGSTREAM_API_KEYS", raising=False)
    assert Settings().api_keys == ()
