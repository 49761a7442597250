"""Latency, peak memory and energy from graph costs and the device model's factors (pure
functions; the factors are calibrated ones or the target's roofline defaults).

    t      = per_inference + sum over nodes (per_gflop[k] x GFLOPs + per_mb[k] x MB + per_node[k])
    memory = weights + largest node working set + runtime base
    energy = power of the target's default power mode x t
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...targets import Target
from ..measurement import LatencyStats, Measurement
from .calibration import Calibration, Factors, default_factors, features, pack
from .graph import GraphCost, graph_costs


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    peak_memory_mb: float
    energy_mj: float | None
    compute_share: float  # of the summed node time: the per-GFLOP terms
    calibration: str  # which factors: a calibration's description, or "uncalibrated defaults"
    peak_gflops: float
    bandwidth_gbps: float


def peak_figures(target: Target, precision: str) -> tuple[float, float]:
    """(peak GFLOP/s at `precision` or fp32, memory bandwidth GB/s); a target without them
    cannot be predicted."""
    from ...errors import TargetError

    gflops = target.peak_gflops.get(precision) or target.peak_gflops.get("fp32")
    if not gflops or not target.memory_bandwidth_gbps:
        raise TargetError(f"target {target.name} has no peak compute / memory bandwidth figures to predict from; "
                          f"add peak_gflops and memory_bandwidth_gbps to its target file")
    return float(gflops), float(target.memory_bandwidth_gbps)


def latency_s(cost: GraphCost, f: Factors) -> float:
    return float(features(cost) @ pack(f))


def predict(cost: GraphCost, target: Target, calibration: Calibration | None = None) -> Prediction:
    gflops, bw = peak_figures(target, cost.precision)
    f = calibration.factors if calibration else default_factors(target, gflops, bw)
    terms = features(cost) * pack(f)
    t = float(terms.sum())
    body = t - float(terms[-1])
    mem_mb = (cost.weights_bytes + cost.peak_activation_bytes) / 2**20 + f.memory_base_mb
    watts = target.power_w()
    return Prediction(
        latency_ms=t * 1000, peak_memory_mb=mem_mb, energy_mj=watts * t * 1000 if watts else None,
        compute_share=float(terms[0:-1:3].sum()) / body if body else 0.0,
        calibration=calibration.describe() if calibration else "uncalibrated defaults (run edgekd calibrate)",
        peak_gflops=gflops, bandwidth_gbps=bw,
    )


def predict_model(onnx_path: Path, target: Target, input_shape: list[int], runtime: str, precision: str = "fp32",
                  calibration: Calibration | None = None) -> Measurement:
    """A `Measurement` whose every figure is labelled `predicted`, with the calibration named."""
    from .calibration import load_calibration

    cal = calibration or load_calibration(target.name, runtime, precision)
    cost = graph_costs(onnx_path, input_shape, precision)
    p = predict(cost, target, cal)
    stats = LatencyStats(n=0, warmup=0, mean=p.latency_ms, std=0.0, min=p.latency_ms, max=p.latency_ms,
                         p50=p.latency_ms, p90=p.latency_ms, p99=p.latency_ms, cv=0.0, total_s=0.0)
    return Measurement(
        target=target.name, runtime=runtime, runtime_version="device model", device=target.description or target.name,
        precision=precision, batch=input_shape[0], input_shape=list(input_shape),
        threads=int(str(cal.conditions.get("threads") or 0)) if cal else 0, latency_ms=stats,
        timing="predicted by the device model (factors per node kind)", peak_memory_mb=p.peak_memory_mb,
        model_size_mb=Path(onnx_path).stat().st_size / 2**20, energy_mj=p.energy_mj, mean_power_w=target.power_w(),
        energy_meter="estimate",
        source={"latency": "predicted", "peak_memory": "predicted", "model_size": "measured",
                **({"energy": "predicted"} if p.energy_mj is not None else {})},
        notes=[f"predicted with {p.calibration}; {p.compute_share:.0%} of node time per FLOP (target peaks "
               f"{p.peak_gflops:g} GFLOP/s, {p.bandwidth_gbps:g} GB/s); p50 = p90 = p99 = the prediction "
               "(a device model gives no distribution)"],
    )
