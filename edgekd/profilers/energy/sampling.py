"""Meters that read instantaneous power and integrate it on a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from . import EnergyResult


def integrate_j(times_s: list[float], watts: list[float]) -> float:
    """Trapezoidal integral of power samples: joules."""
    if len(times_s) < 2:
        return 0.0
    return float(np.trapezoid(np.asarray(watts), np.asarray(times_s)))


class PowerSampler:
    """Samples `read_w()` every `period_s` between start() and stop()."""

    def __init__(self, read_w: Callable[[], float], period_s: float):
        self.read_w = read_w
        self.period_s = period_s
        self.times: list[float] = []
        self.watts: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.times.append(time.perf_counter())
            self.watts.append(self.read_w())
            self._stop.wait(self.period_s)

    def start(self) -> None:
        self.times, self.watts = [], []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[list[float], list[float]]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.times.append(time.perf_counter())  # close the window with a last reading
        self.watts.append(self.read_w())
        return self.times, self.watts


class SampledMeter:
    """A meter made of a power reader: energy = integral of sampled power over the window."""

    name = "sampled"
    source_note = ""

    def __init__(self, read_w: Callable[[], float], period_s: float):
        self.sampler = PowerSampler(read_w, period_s)

    def idle_power_w(self, seconds: float) -> float | None:
        self.sampler.start()
        time.sleep(seconds)
        t, w = self.sampler.stop()
        return integrate_j(t, w) / (t[-1] - t[0]) if t[-1] > t[0] else None

    def start(self) -> None:
        self.sampler.start()

    def stop(self, *, runs: int, timed_seconds: float, latency_s: float) -> EnergyResult:
        t, w = self.sampler.stop()
        joules = integrate_j(t, w)
        window = t[-1] - t[0]
        return EnergyResult(
            energy_mj=joules / runs * 1000, mean_power_w=joules / window if window > 0 else None,
            meter=self.name, source="measured", window_s=window,
            note=f"{self.source_note} sampled every {self.sampler.period_s * 1000:g} ms over a "
                 f"{window:.2f} s window ({len(t)} samples, {runs} runs)",
        )
