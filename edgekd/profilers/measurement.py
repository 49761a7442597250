"""The `Measurement` record (DESIGN.md section 4) and latency statistics (pure functions)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from .contention import Pressure

Source = Literal["measured", "remote", "predicted", "cached"]

# A latency distribution this wide says the host was busy while it was measured: a quiet host
# gives p90 within ~1.3x p50 even for models of a few microseconds. Percentile ratios, not the
# coefficient of variation: one stray millisecond among 0.05 ms runs makes the CV large while
# the distribution the objective reads (p50, p90) is unharmed.
NOISY_P90_OVER_P50 = 1.5
NOISY_P99_OVER_P50 = 5.0


class LatencyStats(BaseModel):
    """Latency distribution of `n` timed runs after `warmup` untimed ones, in milliseconds."""

    n: int
    warmup: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    cv: float  # coefficient of variation, std / mean
    total_s: float
    p10: float | None = None  # the fast runs: those no other work interrupted (None in older records)

    @property
    def spread_warning(self) -> str | None:
        """Why these figures look like a busy host, or None when the spread is what a quiet host gives."""
        if self.p50 <= 0:
            return None
        p90, p99 = self.p90 / self.p50, self.p99 / self.p50
        if p90 <= NOISY_P90_OVER_P50 and p99 <= NOISY_P99_OVER_P50:
            return None
        return (f"latency spread says the host was busy (p90 = {p90:.1f} x p50, p99 = {p99:.1f} x p50); the figure "
                "is kept for this run but not cached: measure again on a quiet machine")


def latency_stats(samples_ms: list[float] | np.ndarray, warmup: int) -> LatencyStats:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    p10, p50, p90, p99 = (float(v) for v in np.percentile(a, [10, 50, 90, 99]))
    return LatencyStats(
        n=int(a.size), warmup=warmup, mean=mean, std=std, min=float(a.min()), max=float(a.max()),
        p50=p50, p90=p90, p99=p99, cv=std / mean if mean > 0 else 0.0, total_s=float(a.sum() / 1000), p10=p10,
    )


class ReferenceWindow(BaseModel):
    """The reference model (the teacher) timed in the same window as this model, interleaved in
    bursts. Other work does not slow both alike: a long multi-threaded model is interrupted far
    more often than a short one (measured: one CPU hog beside a 2-core run tripled a 1.8 ms
    teacher's p50 and left a 0.14 ms student's nearly unchanged), so the ratio of p50s breaks. The
    ratio of p10s (the runs nothing interrupted) holds (within 2 % under one hog), and C_hw uses it."""

    model: str
    p50: float
    p90: float
    p10: float
    ratio_p50: float  # this model's p50 / the reference's, same window
    ratio_p10: float  # this model's p10 / the reference's, same window: C_hw's latency ratio


class Conditions(BaseModel):
    """What the host was doing while the model was measured, and who the host was."""

    pressure: Pressure | None = None  # of the attempt kept
    attempts: int = 1  # timed windows tried; a contended one is tried again, up to a bound
    contended: str | None = None  # why the kept window was still contended; None: it was not
    host: dict[str, Any] = {}  # edgekd.host.provenance(): host, CPU, governor, clocks, power mode
    reference: ReferenceWindow | None = None


class Measurement(BaseModel):
    """One model profiled on one target with one runtime, with the source of every figure."""

    target: str
    runtime: str
    runtime_version: str
    device: str
    precision: str
    batch: int
    input_shape: list[int]
    threads: int
    latency_ms: LatencyStats
    timing: str = "host clock (perf_counter)"
    peak_memory_mb: float | None
    device_memory_mb: float | None = None
    model_size_mb: float
    energy_mj: float | None
    dynamic_energy_mj: float | None = None  # energy above idle power, per inference
    mean_power_w: float | None
    idle_power_w: float | None = None
    energy_meter: str
    source: dict[str, Source]
    cached_from: str | None = None  # when answered from the cache: when it was measured
    board: str | None = None  # the board whose agent measured it (its label, else its URL); None: not a board
    notes: list[str] = []
    conditions: Conditions | None = None  # None: predicted, or recorded before edgekd kept conditions

    @property
    def contended(self) -> str | None:
        """Why this figure cannot be trusted as a quiet host's: still contended after the repeats,
        or a latency spread only a busy host gives. None for a trustworthy figure."""
        if self.conditions is not None and self.conditions.contended:
            return self.conditions.contended
        return self.latency_ms.spread_warning
