"""The device model's factors, their defaults per device class, and their fit to measured
latencies (`edgekd calibrate`).

    t = per_inference + sum over nodes of (per_gflop[k] x GFLOPs + per_mb[k] x MB moved + per_node[k])

with k the node's fit kind (convolutions by width, see graph.fit_kind). Every factor is a time, so
the fit is linear: non-negative least squares on the relative error of each calibration model (a
0.1 ms model counts as much as a 10 ms one), with a weak pull of every factor toward its default
so that kinds no calibration model exercises stay sensible. The defaults come from the target's
peak figures (share of peak compute and bandwidth per kind): an uncalibrated prediction is a
roofline estimate. The fit also reports its cross-validated error: each group of calibration
models (one architecture family) predicted by the factors fitted without it."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from ...targets import Target
from .graph import FIT_KINDS, GraphCost, fit_kind


class Factors(BaseModel):
    per_gflop_s: dict[str, float]  # seconds per GFLOP of a kind (1 / achieved GFLOP/s)
    per_mb_s: dict[str, float]  # seconds per MB a kind moves (1 / achieved MB/s)
    per_node_s: dict[str, float]  # fixed cost per node of a kind (dispatch, threading)
    per_inference_s: float  # fixed cost per inference (session, copies)
    memory_base_mb: float  # runtime's own resident memory for a session


# share of the target's peak compute reached per kind, before calibration
_BASE_SHARE = {"conv": 0.3, "conv_u": 0.2, "conv1x1": 0.4, "conv1x1_u": 0.3, "dwconv": 0.1, "dwconv_u": 0.05,
               "gemm": 0.5, "eltwise": 0.1, "pool": 0.1, "layout": 1.0, "fused": 1.0, "reorder": 1.0}
_COMPUTE_SHARE = {k: _BASE_SHARE[k.removesuffix("_t")] / (2 if k.endswith("_t") else 1) for k in FIT_KINDS}


def default_factors(target: Target, gflops: float, bandwidth_gbps: float) -> Factors:
    gpu = target.device_class in ("gpu", "jetson")
    node = 8e-6 if gpu else 1.5e-6
    return Factors(
        per_gflop_s={k: 1.0 / (gflops * _COMPUTE_SHARE[k]) for k in FIT_KINDS},
        per_mb_s={k: 1.0 / (bandwidth_gbps * 1e3 * 0.5) for k in FIT_KINDS},
        per_node_s={k: node / 4 if k in ("layout", "fused") else node for k in FIT_KINDS},
        per_inference_s=1e-4 if gpu else 2e-5,
        memory_base_mb=60.0 if gpu else 10.0,
    )


def features(cost: GraphCost) -> np.ndarray:
    """[GFLOPs, MB, nodes] per fit kind, then 1 (the per-inference term): latency = features . theta."""
    row = np.zeros(3 * len(FIT_KINDS) + 1)
    index = {k: i for i, k in enumerate(FIT_KINDS)}
    for n in cost.nodes:
        i = 3 * index[fit_kind(n)]
        row[i:i + 3] += (n.flops / 1e9, n.bytes / 1e6, 1.0)
    row[-1] = 1.0
    return row


def pack(f: Factors) -> np.ndarray:
    return np.array([v for k in FIT_KINDS for v in (f.per_gflop_s[k], f.per_mb_s[k], f.per_node_s[k])]
                    + [f.per_inference_s])


def unpack(theta: np.ndarray, memory_base_mb: float) -> Factors:
    t = [float(v) for v in theta]
    return Factors(per_gflop_s={k: t[3 * i] for i, k in enumerate(FIT_KINDS)},
                   per_mb_s={k: t[3 * i + 1] for i, k in enumerate(FIT_KINDS)},
                   per_node_s={k: t[3 * i + 2] for i, k in enumerate(FIT_KINDS)},
                   per_inference_s=t[-1], memory_base_mb=memory_base_mb)


class Calibration(BaseModel):
    model: Literal["additive-v2"] = "additive-v2"  # the device model's form; files of another form are not read
    target: str
    runtime: str
    precision: str
    factors: Factors
    n_models: int
    fitted_at: str
    in_sample_median_abs_error_pct: float
    # each family of calibration models predicted by factors fitted without it
    cv_median_abs_error_pct: float | None = None
    cv_within_10pct: float | None = None
    conditions: dict[str, object] = {}

    def describe(self) -> str:
        cv = (f", cross-validated {self.cv_median_abs_error_pct:.1f}%"
              if self.cv_median_abs_error_pct is not None else "")
        threads = self.conditions.get("threads")
        return (f"calibration of {self.target}/{self.runtime}/{self.precision} fitted {self.fitted_at} on "
                f"{self.n_models} models{f' at {threads} threads' if threads else ''} (median error in-sample "
                f"{self.in_sample_median_abs_error_pct:.1f}%{cv})")


@dataclass
class FitResult:
    factors: Factors
    median_abs_error_pct: float
    errors_pct: list[float] = field(default_factory=list)
    cv_errors_pct: list[float] = field(default_factory=list)

    @property
    def cv_median_abs_error_pct(self) -> float | None:
        return float(np.median(np.abs(self.cv_errors_pct))) if self.cv_errors_pct else None

    @property
    def cv_within_10pct(self) -> float | None:
        return float(np.mean(np.abs(self.cv_errors_pct) <= 10)) if self.cv_errors_pct else None


def _solve(a: np.ndarray, y: np.ndarray, theta0: np.ndarray, prior_weight: float) -> np.ndarray:
    from scipy.optimize import nnls

    rows = a / y[:, None]  # relative error: (a . theta - y) / y
    pull = np.sqrt(prior_weight) * np.diag(1.0 / np.where(theta0 > 0, theta0, 1.0))
    lhs = np.vstack([rows, pull])
    rhs = np.concatenate([np.ones(len(y)), np.sqrt(prior_weight) * (theta0 > 0)])
    theta, _ = nnls(lhs, rhs, maxiter=50 * lhs.shape[1])
    return theta


def fit_factors(costs: list[GraphCost], measured_s: list[float], prior: Factors, prior_weight: float = 0.01,
                measured_memory_mb: list[float | None] | None = None,
                groups: list[str] | None = None) -> FitResult:
    """Factors that best explain `measured_s` (seconds per inference) for the graphs `costs`;
    with `groups` (a family name per model), each group is also predicted by a fit without it."""
    if len(costs) != len(measured_s) or len(costs) < 3:
        raise ValueError("calibration needs at least 3 models with one measured latency each")
    a = np.array([features(c) for c in costs])
    y = np.asarray(measured_s, dtype=float)
    theta0 = pack(prior)
    theta = _solve(a, y, theta0, prior_weight)
    base = prior.memory_base_mb
    if measured_memory_mb and any(m is not None for m in measured_memory_mb):
        # base = median of what the graph alone does not explain
        rest = [m - (c.weights_bytes + c.peak_activation_bytes) / 2**20
                for c, m in zip(costs, measured_memory_mb) if m is not None]
        base = float(max(0.0, np.median(rest)))
    err = (100 * (a @ theta - y) / y).tolist()
    cv: list[float] = []
    if groups and len(set(groups)) > 1:
        g = np.asarray(groups)
        for name in dict.fromkeys(groups):
            out = g == name
            th = _solve(a[~out], y[~out], theta0, prior_weight)
            cv += (100 * (a[out] @ th - y[out]) / y[out]).tolist()
    return FitResult(unpack(theta, base), float(np.median(np.abs(err))), err, cv)


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
    """The stored calibration, or None: none stored, or one of an earlier device model's form
    (predictions then say they are uncalibrated; `edgekd calibrate` makes a new one)."""
    path = _file(target, runtime, precision)
    if not path.is_file():
        return None
    try:
        return Calibration.model_validate_json(path.read_text())
    except ValidationError:
        return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


__all__ = ["Factors", "Calibration", "default_factors", "fit_factors", "save_calibration", "load_calibration",
           "calibration_dir"]
