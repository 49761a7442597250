"""Intel/AMD RAPL package energy from /sys/class/powercap (energy_uj counters)."""

from __future__ import annotations

import time
from pathlib import Path

from ...targets import Target
from . import METERS, EnergyResult, sysfs_root


class RaplDomain:
    def __init__(self, path: Path):
        self.path = path
        self.name = (path / "name").read_text().strip()
        self.max_uj = int((path / "max_energy_range_uj").read_text())

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())

    def delta_uj(self, before: int, after: int) -> int:
        """Energy between two reads; the counter wraps to 0 after max_energy_range_uj."""
        return after - before if after >= before else after + self.max_uj + 1 - before


def package_domains(root: Path | None = None) -> list[RaplDomain]:
    """Readable top-level package domains (intel-rapl:N, name 'package-N')."""
    base = (root or sysfs_root()) / "sys/class/powercap"
    found = []
    for path in sorted(base.glob("intel-rapl:*")):
        if path.name.count(":") != 1:  # intel-rapl:0:0 are sub-domains (core, uncore, dram)
            continue
        try:
            dom = RaplDomain(path)
            dom.read_uj()
        except (OSError, ValueError):
            continue  # not readable (permissions) or malformed
        if dom.name.startswith("package"):
            found.append(dom)
    return found


class RaplMeter:
    name = "rapl"

    def __init__(self, domains: list[RaplDomain]):
        self.domains = domains
        self._t0 = 0.0
        self._before: list[int] = []

    def start(self) -> None:
        self._before = [d.read_uj() for d in self.domains]
        self._t0 = time.perf_counter()

    def stop(self, *, runs: int, timed_seconds: float, mean_latency_s: float) -> EnergyResult:
        after = [d.read_uj() for d in self.domains]
        wall = time.perf_counter() - self._t0
        joules = sum(d.delta_uj(b, a) for d, b, a in zip(self.domains, self._before, after)) / 1e6
        return EnergyResult(
            energy_mj=joules / runs * 1000, mean_power_w=joules / wall if wall > 0 else None,
            meter="rapl", source="measured",
            note=f"RAPL package energy over a {wall:.2f} s window ({runs} runs); includes the whole "
                 "package (idle and other processes), counter update period about 1 ms",
        )


@METERS.register("rapl")
def _open(_target: Target) -> RaplMeter | None:
    domains = package_domains()
    return RaplMeter(domains) if domains else None
