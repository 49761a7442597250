"""Energy meters, registered by name. A meter brackets the timed window of a measurement:
`start()` after warm-up, `stop(...)` after the last timed run, giving energy per inference."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

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


class Meter(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self, *, runs: int, timed_seconds: float, mean_latency_s: float) -> EnergyResult: ...


# a factory returns None when its sensor is absent or unreadable here
METERS: Registry[Callable[[Target], Meter | None]] = Registry("energy meter")
AUTO_ORDER = ["rapl", "estimate"]


def sysfs_root() -> Path:
    """Root that sysfs readers resolve /sys paths under (EDGEKD_SYSFS_ROOT, default /)."""
    return Path(os.environ.get("EDGEKD_SYSFS_ROOT", "/"))


def open_meter(name: str, target: Target) -> Meter:
    if name == "auto":
        for candidate in AUTO_ORDER:
            meter = METERS.get(candidate)(target)
            if meter is not None:
                return meter
        raise ProfilingError("no energy meter works here; use --energy-meter none")
    meter = METERS.get(name)(target)
    if meter is None:
        raise ProfilingError(f"energy meter {name!r} is not available on this machine; use --energy-meter auto")
    return meter


from . import estimate, none, rapl  # noqa: E402,F401  (register the meters)
