"""Efficiency factors of the device model, their defaults per device class, and their fit to
measured latencies (`edgekd calibrate`).

The fit minimises the log-ratio of predicted to measured latency over the calibration models
(so a 0.1 ms model counts as much as a 10 ms one), with a weak pull of every factor toward its
default so that factors no calibration model exercises stay sensible."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ...targets import Target
from .graph import COMPUTE_KINDS, KINDS, GraphCost


class Factors(BaseModel):
    compute: dict[str, float]  # achieved share of peak FLOP/s per kind
    memory: dict[str, float]  # achieved share of peak bandwidth per kind
    overhead_s: dict[str, float]  # fixed cost per node of a kind (kernel launch, dispatch)
    overhead_inference_s: float  # fixed cost per inference (session, copies)
    memory_base_mb: float  # runtime's own resident memory for a session


def default_factors(target: Target) -> Factors:
    gpu = target.device_class in ("gpu", "jetson")
    node = 8e-6 if gpu else 1.5e-6
    return Factors(
        compute={"conv": 0.5, "conv1x1": 0.5, "gemm": 0.5, "dwconv": 0.1, "eltwise": 0.1, "pool": 0.1, "layout": 1.0,
                 "fused": 1.0},
        memory={k: 0.5 for k in KINDS},
        overhead_s={**{k: node for k in KINDS}, "layout": node / 4, "fused": node / 4},
        overhead_inference_s=1e-4 if gpu else 2e-5,
        memory_base_mb=60.0 if gpu else 10.0,
    )


class Calibration(BaseModel):
    target: str
    runtime: str
    precision: str
    factors: Factors
    n_models: int
    fitted_at: str
    in_sample_median_abs_error_pct: float
    conditions: dict[str, object] = {}

    def describe(self) -> str:
        return (f"calibration of {self.target}/{self.runtime}/{self.precision} fitted {self.fitted_at} on "
                f"{self.n_models} models (in-sample median error {self.in_sample_median_abs_error_pct:.1f}%)")


# parameter vector: log e_compute[COMPUTE_KINDS], log e_memory[KINDS], log overhead[KINDS], log overhead_inf
def _pack(f: Factors) -> np.ndarray:
    return np.log(np.array([f.compute[k] for k in COMPUTE_KINDS] + [f.memory[k] for k in KINDS]
                           + [f.overhead_s[k] for k in KINDS] + [f.overhead_inference_s]))


def _unpack(theta: np.ndarray, base: Factors) -> Factors:
    v = np.exp(theta)
    nc, nk = len(COMPUTE_KINDS), len(KINDS)
    return Factors(
        compute={**base.compute, **dict(zip(COMPUTE_KINDS, v[:nc].tolist()))},
        memory=dict(zip(KINDS, v[nc:nc + nk].tolist())),
        overhead_s=dict(zip(KINDS, v[nc + nk:nc + 2 * nk].tolist())),
        overhead_inference_s=float(v[-1]), memory_base_mb=base.memory_base_mb,
    )


@dataclass
class FitResult:
    factors: Factors
    median_abs_error_pct: float
    errors_pct: list[float] = field(default_factory=list)


def fit_factors(costs: list[GraphCost], measured_s: list[float], target: Target, prior: Factors | None = None,
                prior_weight: float = 0.05, measured_memory_mb: list[float | None] | None = None) -> FitResult:
    """Factors that best explain `measured_s` (seconds per inference) for the graphs `costs`."""
    from scipy.optimize import least_squares

    from .roofline import latency_s, peak_figures

    if len(costs) != len(measured_s) or len(costs) < 3:
        raise ValueError("calibration needs at least 3 models with one measured latency each")
    prior = prior or default_factors(target)
    theta0 = _pack(prior)
    peaks = [peak_figures(target, c.precision) for c in costs]
    y = np.log(np.asarray(measured_s))

    def residuals(theta: np.ndarray) -> np.ndarray:
        f = _unpack(theta, prior)
        pred = np.array([latency_s(c, f, g, b) for c, (g, b) in zip(costs, peaks)])
        return np.concatenate([np.log(pred) - y, np.sqrt(prior_weight) * (theta - theta0)])

    sol = least_squares(residuals, theta0, method="trf", x_scale=1.0, max_nfev=2000)
    fitted = _unpack(sol.x, prior)
    if measured_memory_mb and any(m is not None for m in measured_memory_mb):
        # base = median of what the graph alone does not explain
        rest = [m - (c.weights_bytes + c.peak_activation_bytes) / 2**20
                for c, m in zip(costs, measured_memory_mb) if m is not None]
        fitted = fitted.model_copy(update={"memory_base_mb": float(max(0.0, np.median(rest)))})
    pred = np.array([latency_s(c, fitted, g, b) for c, (g, b) in zip(costs, peaks)])
    err = (100 * (pred - np.asarray(measured_s)) / np.asarray(measured_s)).tolist()
    return FitResult(fitted, float(np.median(np.abs(err))), err)


def calibration_dir() -> Path:
    if os.environ.get("EDGEKD_CALIBRATION_DIR"):
        return Path(os.environ["EDGEKD_CALIBRATION_DIR"])
    from ..cache import default_cache_dir

    return default_cache_dir() / "calibrations"


def _file(target: str, runtime: str, precision: str) -> Path:
    return calibration_dir() / f"{target}--{runtime}--{precision}.json"


def save_calibration(cal: Calibration) -> Path:
    path = _file(cal.target, cal.runtime, cal.precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cal.model_dump_json(indent=2))
    return path


def load_calibration(target: str, runtime: str, precision: str) -> Calibration | None:
    path = _file(target, runtime, precision)
    if not path.is_file():
        return None
    return Calibration.model_validate_json(path.read_text())


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


__all__ = ["Factors", "Calibration", "default_factors", "fit_factors", "save_calibration", "load_calibration",
           "calibration_dir"]
