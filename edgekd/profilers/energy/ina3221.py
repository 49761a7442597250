"""NVIDIA Jetson power rails from the INA3221 monitors, through hwmon sysfs.

Each channel N of a hwmon device named 'ina3221' has `inN_label` (rail name), `inN_input`
(bus voltage, mV) and `currN_input` (current, mA); power = V x I. Energy per inference uses the
board input rail (VDD_IN, or the first rail when there is none); every rail's mean power is
reported in the note."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...targets import Target
from . import METERS, EnergyResult, sysfs_root
from .sampling import SampledMeter, integrate_j

SAMPLE_PERIOD_S = 0.02
TOTAL_RAILS = ("VDD_IN", "VIN_SYS_5V0", "POM_5V_IN")  # board input, by module generation


@dataclass(frozen=True)
class Rail:
    name: str
    voltage_file: Path
    current_file: Path

    def watts(self) -> float:
        mv = int(self.voltage_file.read_text())
        ma = int(self.current_file.read_text())
        return mv * ma / 1e6


def find_rails(root: Path | None = None) -> list[Rail]:
    """Readable INA3221 rails under /sys/class/hwmon (disabled channels, labelled 'NC', skipped)."""
    rails = []
    for hw in sorted(((root or sysfs_root()) / "sys/class/hwmon").glob("hwmon*")):
        try:
            if (hw / "name").read_text().strip() != "ina3221":
                continue
        except OSError:
            continue
        for label in sorted(hw.glob("in*_label")):
            n = label.name[2:-6]
            rail = Rail(label.read_text().strip(), hw / f"in{n}_input", hw / f"curr{n}_input")
            if rail.name.upper() == "NC":
                continue
            try:
                rail.watts()
            except (OSError, ValueError):
                continue  # unreadable channel
            rails.append(rail)
    return rails


class Ina3221Meter(SampledMeter):
    name = "ina3221"

    def __init__(self, rails: list[Rail], period_s: float = SAMPLE_PERIOD_S):
        self.rails = rails
        self.total = next((r for r in rails if r.name in TOTAL_RAILS), rails[0])
        self.per_rail: list[list[float]] = []
        super().__init__(self._read, period_s)
        self.source_note = f"INA3221 rail {self.total.name} (V x I)"

    def _read(self) -> float:
        values = [r.watts() for r in self.rails]
        self.per_rail.append(values)
        return values[self.rails.index(self.total)]

    def start(self) -> None:
        self.per_rail = []
        super().start()

    def stop(self, *, runs: int, timed_seconds: float, latency_s: float) -> EnergyResult:
        res = super().stop(runs=runs, timed_seconds=timed_seconds, latency_s=latency_s)
        t = self.sampler.times
        rails = []
        for i, rail in enumerate(self.rails):
            w = [row[i] for row in self.per_rail[:len(t)]]
            if len(w) == len(t) and t[-1] > t[0]:
                rails.append(f"{rail.name} {integrate_j(t, w) / (t[-1] - t[0]):.2f} W")
        return EnergyResult(**{**res.__dict__, "note": res.note + "; mean power per rail: " + ", ".join(rails)})


@METERS.register("ina3221")
def _open(_target: Target) -> Ina3221Meter | None:
    rails = find_rails()
    return Ina3221Meter(rails) if rails else None
