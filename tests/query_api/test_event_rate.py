"""Events per second from the consumers' timestamped cumulative counts."""

from __future__ import annotations

import pytest

from query_api.event_rate import EventRate


def test_the_rate_is_the_growth_since_the_reading_before_the_window() -> None:
    rate = EventRate(window_s=10.0)
    for at, total in ((100.0, 0), (105.0, 50), (110.0, 100), (115.0, 150)):
        rate.record("a", at, total)

    assert rate.per_second(now=115.0) == pytest.approx(10.0)


def test_consumers_add_up() -> None:
    rate = EventRate(window_s=10.0)
    rate.record("a", 100.0, 0)
    rate.record("a", 110.0, 100)
    rate.record("b", 100.0, 1000)
    rate.record("b", 110.0, 1050)

    assert rate.per_second(now=110.0) == pytest.approx(15.0)


def test_a_pipeline_that_stopped_decays_to_zero() -> None:
    rate = EventRate(window_s=10.0)
    rate.record("a", 100.0, 0)
    rate.record("a", 110.0, 100)

    assert rate.per_second(now=200.0) == 0


def test_a_reading_replayed_out_of_order_is_ignored() -> None:
    rate = EventRate(window_s=10.0)
    rate.record("a", 100.0, 0)
    rate.record("a", 110.0, 100)
    rate.record("a", 105.0, 40)

    assert rate.per_second(now=110.0) == pytest.approx(10.0)


def test_no_consumer_no_rate() -> None:
    assert EventRate().per_second(now=1.0) is None
