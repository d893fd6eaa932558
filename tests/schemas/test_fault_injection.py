"""The chaos tests' fault switch: off unless its variable is set, never a setting."""

from __future__ import annotations

import pytest

from schemas import Settings
from schemas.fault_injection import CRASH_BEFORE_COMMIT_ENV, crash_before_commit


def test_no_crash_is_injected_when_the_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_BEFORE_COMMIT_ENV, raising=False)
    assert not any(crash_before_commit() for _ in range(1000))


def test_a_crash_is_injected_at_about_the_probability_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_BEFORE_COMMIT_ENV, "1")
    assert all(crash_before_commit() for _ in range(100))
    monkeypatch.setenv(CRASH_BEFORE_COMMIT_ENV, "0.25")
    crashes = sum(crash_before_commit() for _ in range(10_000))
    assert 2000 < crashes < 3000


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_a_value_that_is_no_probability_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(CRASH_BEFORE_COMMIT_ENV, value)
    with pytest.raises(ValueError, match=CRASH_BEFORE_COMMIT_ENV):
        crash_before_commit()


def test_the_fault_switch_is_not_a_setting_and_never_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_BEFORE_COMMIT_ENV, "1")
    assert CRASH_BEFORE_COMMIT_ENV not in Settings().to_env()
