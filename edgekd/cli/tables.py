"""The rich tables the commands print, and the one way they show a figure that may be unknown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # the commands import these lazily: `edgekd --help` stays fast
    from ..benchmark import BenchRow
    from ..profilers.measurement import Measurement


def fmt(v: float | None, digits: int = 3) -> str:
    """A figure with `digits` decimals, or "-" when it is unknown."""
    return "-" if v is None else f"{v:.{digits}f}"


def profile_table(model: Path, shape: list[int], meter: str, measured: list[Measurement]) -> Table:
    t = Table(title=f"{model.name}, input {'x'.join(map(str, shape))}, energy meter: {meter}")
    for col in ("runtime", "device", "prec", "threads", "n", "p50 ms", "p90 ms", "p99 ms", "CV", "peak MB",
                "size MB", "mJ/inf", "source"):
        t.add_column(col, justify="left" if col in ("runtime", "device", "prec", "source") else "right")
    for m in measured:
        lat = m.latency_ms
        src = "cached" if "cached" in m.source.values() else "measured"
        if m.source.get("energy") == "predicted":
            src += ", energy predicted"
        t.add_row(m.runtime, m.device, m.precision, str(m.threads), str(lat.n), f"{lat.p50:.3f}", f"{lat.p90:.3f}",
                  f"{lat.p99:.3f}", f"{lat.cv:.1%}", fmt(m.peak_memory_mb, 1), f"{m.model_size_mb:.3f}",
                  fmt(m.energy_mj, 4), src)
    return t


def benchmark_table(rows: list[BenchRow]) -> Table:
    t = Table(title="edgekd benchmark (PREDICTED rows come from the device model, not a device)")
    for col in ("model", "format", "target", "runtime", "p50 ms", "p90 ms", "inf/s", "peak MB", "mJ", "accuracy",
                "source"):
        t.add_column(col)
    for r in rows:
        src = r.source.upper() if r.source == "predicted" else r.source
        t.add_row(r.model, r.format, r.target, r.runtime, fmt(r.p50_ms),
                  fmt(r.p90_ms) + (" (contended)" if r.contended else ""), fmt(r.throughput_ips, 0),
                  r.labelled("peak_memory", fmt(r.peak_memory_mb, 1)), r.labelled("energy", fmt(r.energy_mj, 4)),
                  fmt(r.accuracy, 4),
                  escape(f"unavailable: {r.reason}") if r.reason else src)
    return t
