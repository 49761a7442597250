import pytest

from edgekd.search.objective import Costs, CostWeights, Scored, hardware_cost, objective, realtime_penalty, select


def test_penalty_fires_when_too_slow_only():
    assert realtime_penalty(p90_ms=25.0, budget_ms=20.0, gamma=3.0) == 3.0
    assert realtime_penalty(p90_ms=15.0, budget_ms=20.0, gamma=3.0) == 0.0
    assert realtime_penalty(p90_ms=20.0, budget_ms=20.0, gamma=3.0) == 0.0  # exactly on budget meets it


def test_hardware_cost_is_weighted_ratio_to_reference():
    hw = hardware_cost(Costs(2.0, 10.0, 0.5), Costs(8.0, 40.0, 1.0), CostWeights(0.6, 0.2, 0.2))
    assert hw.ratios == {"latency": 0.25, "memory": 0.25, "energy": 0.5}
    assert hw.c_hw == pytest.approx(0.6 * 0.25 + 0.2 * 0.25 + 0.2 * 0.5)


def test_hardware_cost_leaves_out_unknown_terms():
    hw = hardware_cost(Costs(2.0, None, 0.5), Costs(4.0, 40.0, None), CostWeights(1.0, 1.0, 1.0))
    assert hw.terms["memory"] is None and hw.terms["energy"] is None
    assert hw.c_hw == pytest.approx(0.5)


def test_objective_sums_its_terms():
    assert objective(0.8, 0.5, 2.0, 3.0, lam=0.4, delta=0.1) == pytest.approx(0.8 + 0.2 + 2.0 + 0.3)
    assert objective(0.8, 0.5, 0.0, None, lam=0.4, delta=0.1) == pytest.approx(1.0)


def test_selection_prefers_budget_meeting_candidate_even_with_higher_j():
    cands = [Scored("fast", 1.5, True, 9.0), Scored("slow-but-low-j", 1.0, False, 30.0), Scored("mid", 1.2, True, 12.0)]
    name, reason = select(cands, budget_ms=20.0)
    assert name == "mid"
    assert "2 of 3" in reason and "meets" in reason


def test_selection_when_none_meets_budget_says_so():
    name, reason = select([Scored("a", 2.0, False, 30.0), Scored("b", 1.0, False, 40.0)], budget_ms=20.0)
    assert name == "b"
    assert reason.startswith("no candidate meets the 20 ms budget")


def test_selection_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        select([], 10.0)
