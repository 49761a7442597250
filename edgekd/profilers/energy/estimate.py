"""No sensor: energy estimated as the target's power figure x p50 latency (labelled predicted).

The p50, not the mean: the mean carries every outlier of a busy host, and an estimate that
followed it would rank students by noise. It follows the same robust figure as C_hw's latency."""

from __future__ import annotations

from ...targets import Target
from . import METERS, EnergyResult


class PowerEstimate:
    name = "estimate"

    def __init__(self, target: Target, watts: float):
        self.target = target
        self.watts = watts

    def idle_power_w(self, seconds: float) -> float | None:
        return None  # nothing is read: no idle figure to report

    def start(self) -> None:
        pass

    def stop(self, *, runs: int, timed_seconds: float, latency_s: float) -> EnergyResult:
        return EnergyResult(
            energy_mj=self.watts * latency_s * 1000, mean_power_w=self.watts,
            meter="estimate", source="predicted",
            note=f"energy estimated: {self.watts:g} W ({self.target.name} power figure) x measured p50 "
                 "latency; no energy sensor was readable",
        )


@METERS.register("estimate")
def _open(target: Target) -> PowerEstimate | None:
    watts = target.power_w()
    return PowerEstimate(target, watts) if watts else None
