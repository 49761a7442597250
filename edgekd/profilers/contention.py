"""Is the host busy while a model is measured? Read before and over the timed window:

- CPU pressure (Linux PSI, `/proc/pressure/cpu`): the share of the window in which some runnable
  task waited for a CPU. A quiet 2-core host reads <= 0.01 while edgekd measures with both cores;
  one CPU hog beside it reads ~0.5, two ~0.9 (measured on this project's CI-class machine).
- Other processes' CPU time over the window, as a share of the usable CPUs (`/proc/stat` busy
  time less this process's own). PSI counts our own threads too: two ONNX Runtime sessions timed
  in turn keep the idle one's threads spinning, which reads ~0.5 on a quiet host. So PSI marks a
  window only when other processes used the CPUs too; without PSI, their share decides alone.
- Steal time (`/proc/stat`): a hypervisor giving the vCPU to another guest.

Paths are read under `root` so that tests can give a fake /proc tree."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil
from pydantic import BaseModel

from ..host import read_fact

CONTENDED_PRESSURE = 0.20  # PSI "some": over a fifth of the window some task waited for a CPU ...
CONTENDED_OTHERS_WITH_PSI = 0.10  # ... while other processes used over a tenth of the usable CPUs
CONTENDED_OTHERS = 0.25  # without PSI: other processes used over a quarter of the usable CPUs
CONTENDED_STEAL = 0.05  # over 5 % of CPU time taken by the hypervisor


class Pressure(BaseModel):
    """The host's CPU load over one timed window, and before it."""

    source: Literal["psi", "cpu-time"]  # what `during` is: PSI "some" share, or others' CPU share
    before: float | None  # PSI avg10 as a share (psi), or the 1-minute load per usable CPU (cpu-time)
    during: float  # share of the window (see source)
    steal: float | None  # share of CPU time stolen by a hypervisor; None when not readable
    others: float | None = None  # other processes' CPU time / (window x usable CPUs); None: not readable
    load1: float  # 1-minute load average
    usable_cpus: int
    window_s: float

    @property
    def contended(self) -> str | None:
        """Why this window was contended, or None."""
        others = self.others if self.others is not None else 1.0
        if self.source == "psi" and self.during > CONTENDED_PRESSURE and others > CONTENDED_OTHERS_WITH_PSI:
            return (f"some task waited for a CPU {self.during:.0%} of the window (limit {CONTENDED_PRESSURE:.0%}) "
                    f"while other processes used {others:.0%} of the CPUs")
        if self.source == "cpu-time" and self.during > CONTENDED_OTHERS:
            return f"other processes used the CPUs {self.during:.0%} of the window (limit {CONTENDED_OTHERS:.0%})"
        if self.steal is not None and self.steal > CONTENDED_STEAL:
            return f"the hypervisor stole {self.steal:.0%} of CPU time (limit {CONTENDED_STEAL:.0%})"
        return None


@dataclass
class _Snapshot:
    t: float
    psi_total_us: int | None
    psi_avg10: float | None
    busy_s: float | None
    steal_ticks: int | None
    all_ticks: int | None
    own_cpu_s: float
    load1: float


@dataclass
class PressureReader:
    """`start()` before the timed window, `stop()` after it: the window's `Pressure`."""

    usable_cpus: int
    root: Path = Path("/")
    _start: _Snapshot | None = field(default=None, repr=False)

    def _snap(self) -> _Snapshot:
        psi_total = psi_avg = None
        text = read_fact(self.root / "proc/pressure/cpu")
        if text:
            for line in text.splitlines():
                if line.startswith("some "):
                    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
                    psi_total, psi_avg = int(fields["total"]), float(fields["avg10"]) / 100
        busy = steal = total = None
        stat = read_fact(self.root / "proc/stat")
        if stat and stat.startswith("cpu "):
            ticks = [int(v) for v in stat.splitlines()[0].split()[1:]]
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            total = sum(ticks[:8])
            steal = ticks[7] if len(ticks) > 7 else 0
            busy = (total - idle - steal) / hz
        loadavg = read_fact(self.root / "proc/loadavg")
        load1 = float(loadavg.split()[0]) if loadavg else 0.0
        own = psutil.Process().cpu_times()
        own_s = own.user + own.system + own.children_user + own.children_system
        return _Snapshot(time.perf_counter(), psi_total, psi_avg, busy, steal, total, own_s, load1)

    def start(self) -> None:
        self._start = self._snap()

    def stop(self) -> Pressure:
        a, b = self._start, self._snap()
        if a is None:
            raise RuntimeError("PressureReader.stop() before start()")
        window = max(b.t - a.t, 1e-6)
        steal = None
        if a.all_ticks is not None and b.all_ticks is not None and b.all_ticks > a.all_ticks:
            steal = (b.steal_ticks - a.steal_ticks) / (b.all_ticks - a.all_ticks)  # type: ignore[operator]
        others = None
        if a.busy_s is not None and b.busy_s is not None:
            used = (b.busy_s - a.busy_s) - (b.own_cpu_s - a.own_cpu_s)  # CPU-seconds of every other process
            others = min(1.0, max(0.0, used) / (window * self.usable_cpus))
        if a.psi_total_us is not None and b.psi_total_us is not None:
            return Pressure(source="psi", before=a.psi_avg10, during=min(1.0, (b.psi_total_us - a.psi_total_us)
                                                                            / 1e6 / window),
                            steal=steal, others=others, load1=b.load1, usable_cpus=self.usable_cpus, window_s=window)
        return Pressure(source="cpu-time", before=a.load1 / self.usable_cpus, during=others or 0.0, steal=steal,
                        others=others, load1=b.load1, usable_cpus=self.usable_cpus, window_s=window)
