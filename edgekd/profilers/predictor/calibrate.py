"""`edgekd calibrate`: measure a set of calibration models on the target (here, or through the
device agent), fit the device model's factors to them and store the calibration."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...models.arch import ArchSpec
from ...targets import Target
from ..measurement import Measurement
from .calibration import Calibration, fit_factors, now, save_calibration
from .graph import graph_costs

CHANNELS = 3


def calibration_set() -> list[tuple[ArchSpec, int]]:
    """(architecture, input resolution) pairs measured by `edgekd calibrate`."""
    out = []
    for i, (w, d, k, r) in enumerate(itertools.product((0.25, 0.5, 1.0, 2.0), (1, 3), (3, 5), (32, 64))):
        out.append((ArchSpec(width=w, depth=d, kernel=k, expansion=2 if i % 2 else 4), r))
    return out


def holdout_set() -> list[tuple[ArchSpec, int]]:
    """Architectures and resolutions disjoint from `calibration_set` (for accuracy checks)."""
    a = [(ArchSpec(width=w, depth=2, kernel=k, expansion=3), r)
         for w, k, r in itertools.product((0.75, 1.5), (3, 7), (48, 96))]
    b = [(ArchSpec(width=w, depth=4, kernel=5, expansion=3), r) for w, r in itertools.product((0.375, 1.25), (40, 80))]
    return a + b


def export_set(pairs: list[tuple[ArchSpec, int]], folder: Path) -> list[tuple[Path, list[int]]]:
    from ...convert.onnx import to_onnx
    from ...models.family import build_model

    out = []
    for arch, res in pairs:
        shape = [1, CHANNELS, res, res]
        path = folder / f"{arch.name}-r{res}.onnx"
        if not path.exists():
            to_onnx(build_model(arch, CHANNELS, 10), path, shape)
        out.append((path, shape))
    return out


Measure = Callable[[Path, list[int]], Measurement]


def calibrate(target: Target, runtime: str, precision: str, measure: Measure,
              pairs: list[tuple[ArchSpec, int]] | None = None, work: Path | None = None,
              on_model: Callable[[str], None] = lambda _: None, save: bool = True) -> Calibration:
    work = work or Path(tempfile.mkdtemp(prefix="edgekd-calibrate-"))
    models = export_set(pairs or calibration_set(), work)
    costs, lat, mem, conditions = [], [], [], {}
    for path, shape in models:
        m = measure(path, shape)
        costs.append(graph_costs(path, shape, precision))
        lat.append(m.latency_ms.p50 / 1000)
        mem.append(m.peak_memory_mb)
        conditions = {"runtime_version": m.runtime_version, "threads": m.threads, "device": m.device,
                      "latency_statistic": "p50", "source": m.source.get("latency")}
        on_model(path.stem)
    fit = fit_factors(costs, lat, target, measured_memory_mb=mem)
    cal = Calibration(target=target.name, runtime=runtime, precision=precision, factors=fit.factors,
                      n_models=len(models), fitted_at=now(), in_sample_median_abs_error_pct=fit.median_abs_error_pct,
                      conditions=conditions)
    if save:
        save_calibration(cal)
    return cal
