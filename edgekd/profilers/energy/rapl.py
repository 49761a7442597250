"""Intel/AMD RAPL energy from /sys/class/powercap: package domains plus their DRAM sub-domains."""

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


def _readable(path: Path) -> RaplDomain | None:
    try:
        dom = RaplDomain(path)
        dom.read_uj()
        return dom
    except (OSError, ValueError):
        return None  # not readable (permissions: energy_uj is root-only on recent kernels) or malformed


def rapl_domains(root: Path | None = None) -> list[RaplDomain]:
    """Readable package domains (intel-rapl:N, 'package-N') and DRAM domains (a 'dram'
    sub-domain intel-rapl:N:M, or a top-level one). Core/uncore sub-domains are inside the
    package figure and are not added again."""
    base = (root or sysfs_root()) / "sys/class/powercap"
    found = []
    for path in sorted(base.glob("intel-rapl:*")):
        dom = _readable(path)
        if dom is None:
            continue
        top = path.name.count(":") == 1
        if (top and dom.name.startswith("package")) or dom.name == "dram":
            found.append(dom)
    return found


def package_domains(root: Path | None = None) -> list[RaplDomain]:
    return [d for d in rapl_domains(root) if d.name.startswith("package")]


class RaplMeter:
    name = "rapl"

    def __init__(self, domains: list[RaplDomain]):
        self.domains = domains
        self._t0 = 0.0
        self._before: list[int] = []

    def _joules_since(self, before: list[int]) -> float:
        after = [d.read_uj() for d in self.domains]
        return sum(d.delta_uj(b, a) for d, b, a in zip(self.domains, before, after)) / 1e6

    def idle_power_w(self, seconds: float) -> float | None:
        before, t0 = [d.read_uj() for d in self.domains], time.perf_counter()
        time.sleep(seconds)
        joules = self._joules_since(before)
        return joules / (time.perf_counter() - t0)

    def start(self) -> None:
        self._before = [d.read_uj() for d in self.domains]
        self._t0 = time.perf_counter()

    def stop(self, *, runs: int, timed_seconds: float, latency_s: float) -> EnergyResult:
        joules = self._joules_since(self._before)
        wall = time.perf_counter() - self._t0
        names = "+".join(d.name for d in self.domains)
        return EnergyResult(
            energy_mj=joules / runs * 1000, mean_power_w=joules / wall if wall > 0 else None,
            meter="rapl", source="measured", window_s=wall,
            note=f"RAPL energy ({names}) over a {wall:.2f} s window ({runs} runs); the whole package "
                 "(idle and other processes included), counter update period about 1 ms",
        )


@METERS.register("rapl")
def _open(_target: Target) -> RaplMeter | None:
    domains = rapl_domains()
    return RaplMeter(domains) if any(d.name.startswith("package") for d in domains) else None
