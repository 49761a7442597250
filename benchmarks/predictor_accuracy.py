"""Benchmark: how accurate is the device model on architectures it was not calibrated on?

Calibrates the host CPU (ONNX Runtime, fp32) on `calibration_set()` (32 EdgeNets: widths
0.25-2, depths 1/3, kernels 3/5, resolutions 32/64), then predicts the disjoint
`holdout_set()` (widths 0.375/0.75/1.25/1.5, depths 2/4, kernels 3/5/7, resolutions
40/48/80/96) and compares with measured p50 latency. Also records the uncalibrated prediction.

Run:  python benchmarks/predictor_accuracy.py
Records benchmarks/results/predictor_accuracy.{json,md}.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from edgekd.host import default_threads
from edgekd.profilers import ProfileSettings, profile_model
from edgekd.profilers.predictor import graph_costs, predict
from edgekd.profilers.predictor.calibrate import calibrate, export_set, holdout_set
from edgekd.targets import get_target

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    target = get_target("cpu")
    threads = default_threads()
    settings = ProfileSettings(threads=threads, warmup=10, min_runs=50, min_seconds=1.0, measure_memory=False,
                               energy_meter="none")
    work = Path(tempfile.mkdtemp(prefix="edgekd-pred-"))
    t0 = time.perf_counter()
    cal = calibrate(target, "onnxruntime", "fp32",
                    lambda p, s: profile_model(p, target, "onnxruntime", s, settings), work=work, save=False)
    calib_s = time.perf_counter() - t0
    rows = []
    for path, shape in export_set(holdout_set(), work):
        measured = profile_model(path, target, "onnxruntime", shape, settings).latency_ms.p50
        cost = graph_costs(path, shape)
        rows.append({"model": path.stem, "gflops": cost.flops / 1e9, "measured_p50_ms": measured,
                     "predicted_ms": predict(cost, target, cal).latency_ms,
                     "uncalibrated_ms": predict(cost, target, None).latency_ms})
    meas = np.array([r["measured_p50_ms"] for r in rows])

    def score(key: str) -> dict:
        pred = np.array([r[key] for r in rows])
        err = np.abs(pred - meas) / meas * 100
        return {f"within_{k}pct": float((err <= k).mean()) for k in (10, 15, 20)} | {
            "median_abs_error_pct": float(np.median(err)), "spearman": float(spearmanr(meas, pred).statistic)}

    result = {"benchmark": "predictor_accuracy", "command": "python benchmarks/predictor_accuracy.py",
              "conditions": {"target": "cpu", "runtime": "onnxruntime", "precision": "fp32", "threads": threads,
                             "batch": 1, "latency": "measured p50, >= 50 runs and >= 1 s", "host": target.host},
              "calibration": {"n_models": cal.n_models, "seconds": round(calib_s, 1),
                              "in_sample_median_abs_error_pct": cal.in_sample_median_abs_error_pct,
                              "factors": cal.factors.model_dump()},
              "holdout": rows, "calibrated": score("predicted_ms"), "uncalibrated": score("uncalibrated_ms")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "predictor_accuracy.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "predictor_accuracy.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    c, u = r["calibrated"], r["uncalibrated"]
    lines = ["# Device-model accuracy on held-out architectures", "",
             f"Command: `{r['command']}`. Host CPU, onnxruntime fp32, batch 1, {r['conditions']['threads']} threads; "
             f"measured p50 (>= 50 runs, >= 1 s) vs predicted. Calibrated on {r['calibration']['n_models']} models "
             f"in {r['calibration']['seconds']} s (in-sample median error "
             f"{r['calibration']['in_sample_median_abs_error_pct']:.1f}%).", "",
             "| held-out model | GFLOP | measured p50 ms | predicted ms | error | uncalibrated ms "
             "|", "|---|---|---|---|---|---|"]
    for row in r["holdout"]:
        err = (row["predicted_ms"] - row["measured_p50_ms"]) / row["measured_p50_ms"] * 100
        lines.append(f"| {row['model']} | {row['gflops']:.4f} | {row['measured_p50_ms']:.4f} | "
                     f"{row['predicted_ms']:.4f} | "
                     f"{err:+.1f}% | {row['uncalibrated_ms']:.4f} |")
    lines += ["", "| | within ±10% | within ±15% | within ±20% | median abs error | Spearman "
                  "|", "|---|---|---|---|---|---|",
              f"| calibrated | {c['within_10pct']:.0%} | {c['within_15pct']:.0%} | {c['within_20pct']:.0%} | "
              f"{c['median_abs_error_pct']:.1f}% | {c['spearman']:.3f} |",
              f"| uncalibrated | {u['within_10pct']:.0%} | {u['within_15pct']:.0%} | {u['within_20pct']:.0%} | "
              f"{u['median_abs_error_pct']:.1f}% | {u['spearman']:.3f} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
