"""No energy figure at all (--energy-meter none)."""

from __future__ import annotations

from ...targets import Target
from . import METERS, EnergyResult


class NoMeter:
    name = "none"

    def idle_power_w(self, seconds: float) -> float | None:
        return None

    def start(self) -> None:
        pass

    def stop(self, *, runs: int, timed_seconds: float, latency_s: float) -> EnergyResult:
        return EnergyResult(energy_mj=None, mean_power_w=None, meter="none", source="measured",
                            note="energy not measured (--energy-meter none)")


@METERS.register("none")
def _open(_target: Target) -> NoMeter:
    return NoMeter()
