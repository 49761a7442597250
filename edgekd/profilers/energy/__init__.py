"""Energy meters, registered by name. A meter brackets the timed window of a measurement:
`start()` after warm-up, `stop(...)` after the last timed run, giving energy per inference;
`idle_power_w(seconds)` reads the power with nothing running, so dynamic energy can be shown.

| meter    | sensor                                       | update period      | source    |
|----------|----------------------------------------------|--------------------|-----------|
| rapl     | /sys/class/powercap/intel-rapl* energy_uj    | about 1 ms         | measured  |
| nvml     | NVML total-energy counter, else power samples| ~10-100 ms (board) | measured  |
| ina3221  | Jetson INA3221 rails via hwmon (V x I)       | sampled every 20 ms| measured  |
| estimate | the target's power figure x p50 latency      | -                  | predicted |
| none     | nothing                                      | -                  | -         |

Windows shorter than a meter's update period give meaningless energy: keep the profiler's
minimum duration at 1 s (the default) or more when a sensor is read."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...errors import ProfilingError
from ...registry import Registry
from ...targets import Target


@dataclass(frozen=True)
class EnergyResult:
    energy_mj: float | None  # per inference
    mean_power_w: float | None
    meter: str
    source: str  # "measured" or "predicted"
    note: str = ""
    window_s: float | None = None  # wall time of the metered window


class Meter(Protocol):
    name: str

    def idle_power_w(self, seconds: float) -> float | None: ...

    def start(self) -> None: ...

    def stop(self, *, runs: int, timed_seconds: float, latency_s: float) -> EnergyResult:
        """Energy per inference over the timed window of `runs` runs; `latency_s` is the run's
        p50 latency (what an estimate without a sensor multiplies by a power figure)."""
        ...


# a factory returns None when its sensor is absent or unreadable here
METERS: Registry[Callable[[Target], Meter | None]] = Registry("energy meter")
AUTO_ORDER = ["ina3221", "nvml", "rapl", "estimate"]


def sysfs_root() -> Path:
    """Root that sysfs readers resolve /sys paths under (EDGEKD_SYSFS_ROOT, default /)."""
    return Path(os.environ.get("EDGEKD_SYSFS_ROOT", "/"))


def open_meter(name: str, target: Target) -> Meter:
    if name == "auto":
        for candidate in AUTO_ORDER:
            meter = METERS.get(candidate)(target)
            if meter is not None:
                return meter
        fallback = METERS.get("none")(target)
        if fallback is None:
            raise ProfilingError("no energy meter, not even 'none', is available")
        return fallback
    meter = METERS.get(name)(target)
    if meter is None:
        raise ProfilingError(f"energy meter {name!r} is not available on this machine "
                             "(no readable sensor); use --energy-meter auto")
    return meter


from . import estimate, ina3221, none, nvml, rapl  # noqa: E402,F401  (register the meters)
