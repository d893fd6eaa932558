from __future__ import annotations

from schemas.generations import ControlState
from schemas.search_tuning import MAX_KEPT_VERSIONS, TunedFusion, tuning_key


def tuned(prior: float, tenant: str | None = None) -> TunedFusion:
    return TunedFusion(1, prior, tenant, 1.0e9, "feedback", 40, 0.61, 0.64)


def test_each_version_keeps_the_ones_it_replaced_and_rolls_back_to_them_in_order():
    first = tuned(0.5)
    second = tuned(0.7).replacing(first)
    third = tuned(0.9).replacing(second)
    assert (third.version, [v.version for v in third.previous]) == (3, [2, 1])
    back = third.rolled_back()
    assert back is not None and (back.version, back.vector_prior) == (2, 0.7)
    assert back.rolled_back() == first
    assert first.rolled_back() is None
    assert TunedFusion.from_json(third.to_json()) == third


def test_the_history_is_bounded():
    record = tuned(0.1)
    for step in range(MAX_KEPT_VERSIONS + 5):
        record = tuned(step / 100).replacing(record)
    assert len(record.previous) == MAX_KEPT_VERSIONS


def test_a_tenant_uses_its_own_parameters_then_everyone_s_then_the_configured_ones():
    state = ControlState()
    assert state.tuned_for("acme") is None
    state.apply(tuning_key(None), tuned(0.6).to_json())
    state.apply(tuning_key("acme"), tuned(0.2, "acme").to_json())
    assert state.tuned_for("acme").vector_prior == 0.2
    assert state.tuned_for("globex").vector_prior == 0.6
    assert state.tuned_for(None).vector_prior == 0.6
    state.apply(tuning_key("acme"), None)
    assert state.tuned_for("acme").vector_prior == 0.6
