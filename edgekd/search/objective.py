"""The selection objective (DESIGN.md section 1), as pure functions of numbers.

    C_hw(S) = w_lat * t/t_ref + w_mem * m/m_ref + w_energy * e/e_ref
    P_rt(S) = gamma * 1[t_p90(S) > t_real-time]
    J(S)    = L_KD,val(S) + lambda * C_hw(S) + P_rt(S) + delta * Energy(S)

References are the teacher measured on the same target; t is the p50 latency, e the energy per
inference in mJ (delta is per mJ). A term whose figure or reference is unknown is left out and
reported as such."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Costs:
    latency_ms: float
    peak_memory_mb: float | None
    energy_mj: float | None
    # latency / the reference's, both timed in one window (interleaved): used in place of
    # latency_ms / reference.latency_ms, which mixes windows a busy host may have slowed unequally
    latency_ratio: float | None = None


@dataclass(frozen=True)
class CostWeights:
    latency: float = 0.6
    memory: float = 0.2
    energy: float = 0.2


class HardwareCost(BaseModel):
    c_hw: float
    terms: dict[str, float | None]  # weighted term per resource; None = left out (unknown)
    ratios: dict[str, float | None]  # candidate / reference per resource


def _ratio(value: float | None, ref: float | None) -> float | None:
    if value is None or ref is None or ref <= 0:
        return None
    return value / ref


def hardware_cost(costs: Costs, reference: Costs, weights: CostWeights) -> HardwareCost:
    ratios = {
        "latency": costs.latency_ratio if costs.latency_ratio is not None else _ratio(costs.latency_ms,
                                                                                      reference.latency_ms),
        "memory": _ratio(costs.peak_memory_mb, reference.peak_memory_mb),
        "energy": _ratio(costs.energy_mj, reference.energy_mj),
    }
    w = {"latency": weights.latency, "memory": weights.memory, "energy": weights.energy}
    terms = {k: None if r is None else w[k] * r for k, r in ratios.items()}
    return HardwareCost(c_hw=sum(t for t in terms.values() if t is not None), terms=terms, ratios=ratios)


def realtime_penalty(p90_ms: float, budget_ms: float, gamma: float) -> float:
    """gamma when the candidate is too slow (p90 above the budget), else 0."""
    return gamma if p90_ms > budget_ms else 0.0


def objective(kd_loss: float, c_hw: float, penalty: float, energy_mj: float | None,
              lam: float, delta: float) -> float:
    return kd_loss + lam * c_hw + penalty + (delta * energy_mj if energy_mj is not None else 0.0)


class Score(BaseModel):
    """What the objective says of one measured, validated student."""

    hardware_cost: HardwareCost
    penalty: float
    meets_budget: bool  # p90 <= budget
    fits_memory: bool  # peak memory within the target's budget (or either unknown)
    objective: float  # J


@dataclass(frozen=True)
class Objective:
    """J with its weights, budget and reference (the teacher measured the same way): the one
    record the search scores with and the report describes."""

    lam: float
    gamma: float
    delta: float
    weights: CostWeights
    budget_ms: float
    reference: Costs
    memory_budget_mb: float | None = None

    def score(self, kd_loss: float, costs: Costs, p90_ms: float) -> Score:
        hw = hardware_cost(costs, self.reference, self.weights)
        pen = realtime_penalty(p90_ms, self.budget_ms, self.gamma)
        mem, budget = costs.peak_memory_mb, self.memory_budget_mb
        return Score(hardware_cost=hw, penalty=pen, meets_budget=p90_ms <= self.budget_ms,
                     fits_memory=mem is None or budget is None or mem <= budget,
                     objective=objective(kd_loss, hw.c_hw, pen, costs.energy_mj, self.lam, self.delta))


@dataclass(frozen=True)
class Scored:
    name: str
    objective: float
    meets_budget: bool
    p90_ms: float
    fits_memory: bool = True


def select(scored: list[Scored], budget_ms: float) -> tuple[str, str]:
    """argmin J over the candidates that fit the device's memory and meet the budget; only when
    none meets the budget, argmin J over those that fit, and the reason says so. Memory is a hard
    constraint: when nothing fits, nothing is selected (ValueError)."""
    if not scored:
        raise ValueError("no candidates to select from")
    if not any(s.fits_memory for s in scored):
        raise ValueError("no candidate fits the device's memory budget")
    scored = [s for s in scored if s.fits_memory]
    within = [s for s in scored if s.meets_budget]
    if within:
        best = min(within, key=lambda s: s.objective)
        return best.name, (
            f"lowest objective J = {best.objective:.4f} among the {len(within)} of {len(scored)} "
            f"candidates whose p90 latency meets the {budget_ms:g} ms budget "
            f"({best.name}: p90 {best.p90_ms:.3f} ms)"
        )
    best = min(scored, key=lambda s: s.objective)
    return best.name, (
        f"no candidate meets the {budget_ms:g} ms budget; selected the lowest objective "
        f"J = {best.objective:.4f} of all, {best.name} (p90 {best.p90_ms:.3f} ms, over budget)"
    )
