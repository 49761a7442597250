"""Benchmark: how accurate is the device model on models its calibration never saw?

Builds two disjoint sets itself (edgekd.profilers.predictor.calibrate): the calibration set that
`edgekd calibrate` measures (EdgeNets, timm MobileNetV2/V3-Small-0.5/V3-Large-0.75/
EfficientNet-Lite1/ResNet-10t/ResNet-34, EdgeNet-Seg and MobileNetV3 + FPN segmenters) and a
held-out set (EdgeNets of other widths/expansions/kernels/resolutions; MobileNetV3-Small-0.75/1.0,
MobileNetV3-Large-1.0, EfficientNet-Lite0 and ResNet-18 at 64 and 128 px; LRASPP, EdgeNet-Seg and
EfficientNet-Lite0 + FPN segmenters at 128 and 192 px). Every model is measured on this machine
with ONNX Runtime fp32 at batch 1, the two sets in one shuffled order (so a change of load hits
both alike), each as `edgekd profile` does (>= 50 runs and >= 1 s, 10 warm-up; `edgekd calibrate`
measures alike); each held-out model twice, for the measurement's own repeatability. The device
model is fitted on the calibration set only, as `edgekd calibrate` fits it (in-sample and
cross-validated error), and predicts each held-out model, as `edgekd predict` does; the prediction
is compared with the measured p50.

Run:  python benchmarks/predictor_accuracy.py [--work DIR]
      (--work keeps the exported models and the measurements: a rerun with the same folder
       refits from them without measuring again, and says so)
Records benchmarks/results/predictor_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from edgekd.host import default_threads
from edgekd.profilers import ProfileSettings, profile_model
from edgekd.profilers.predictor import graph_costs, predict
from edgekd.profilers.predictor.calibrate import CalModel, calibration_set, export_set, holdout_set
from edgekd.profilers.predictor.calibration import Calibration, default_factors, fit_factors, now
from edgekd.profilers.predictor.roofline import peak_figures
from edgekd.targets import get_target

RESULTS = Path(__file__).parent / "results"


def measure_all(cal: list[CalModel], hold: list[CalModel], work: Path) -> tuple[dict, dict]:
    """p50 of every model (ms), measured in one shuffled order; cached in WORK/measured.json."""
    target = get_target("cpu")
    threads = default_threads()
    as_calibrate = ProfileSettings(threads=threads, min_seconds=1.0, measure_memory=False, energy_meter="none")
    as_profile = ProfileSettings(threads=threads, warmup=10, min_runs=50, min_seconds=1.0, measure_memory=False,
                                 energy_meter="none")
    store = work / "measured.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    jobs = ([(m.name, m, p, as_calibrate, "calibration") for m, p in zip(cal, export_set(cal, work))]
            + [(m.name + suffix, m, p, as_profile, "holdout") for m, p in zip(hold, export_set(hold, work))
               for suffix in ("", "#repeat")])  # each held-out model twice: the measurement's own repeatability
    random.Random(0).shuffle(jobs)
    todo = [j for j in jobs if j[0] not in done]
    print(f"{len(jobs)} models, {len(jobs) - len(todo)} measured before (in {store})")
    for i, (key, _, (path, shape), settings, role) in enumerate(todo, 1):
        got = profile_model(path, target, "onnxruntime", shape, settings)
        done[key] = {"role": role, "p50_ms": got.latency_ms.p50, "cv": got.latency_ms.cv, "runs": got.latency_ms.n,
                        "threads": got.threads, "load_1m": round(os.getloadavg()[0], 2)}
        store.write_text(json.dumps(done, indent=1))
        print(f"[{i}/{len(todo)}] {role:11s} {key:45s} p50 {got.latency_ms.p50:.4f} ms", flush=True)
    return done, {"threads": threads, "runtime_version": got.runtime_version if todo else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for the models and measurements (kept)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekd-pred-"))
    work.mkdir(parents=True, exist_ok=True)
    target = get_target("cpu")
    cal, hold = calibration_set(), holdout_set()
    assert not {m.name for m in cal} & {m.name for m in hold}
    t0 = time.perf_counter()
    measured, cond = measure_all(cal, hold, work)
    paths = dict(zip([m.name for m in cal + hold], export_set(cal + hold, work)))
    costs = {name: graph_costs(p, s) for name, (p, s) in paths.items()}
    prior = default_factors(target, *peak_figures(target, "fp32"))
    fit = fit_factors([costs[m.name] for m in cal], [measured[m.name]["p50_ms"] / 1000 for m in cal], prior,
                      groups=[m.family for m in cal])
    calibration = Calibration(target="cpu", runtime="onnxruntime", precision="fp32", factors=fit.factors,
                              n_models=len(cal), fitted_at=now(),
                              in_sample_median_abs_error_pct=fit.median_abs_error_pct,
                              cv_median_abs_error_pct=fit.cv_median_abs_error_pct,
                              cv_within_10pct=fit.cv_within_10pct, conditions={"threads": cond["threads"]})
    rows = []
    for m in hold:
        c = costs[m.name]
        rows.append({"model": m.name, "family": m.family, "gflops": c.flops / 1e9,
                     "measured_p50_ms": measured[m.name]["p50_ms"], "measured_cv": measured[m.name]["cv"],
                     "remeasured_p50_ms": measured[m.name + "#repeat"]["p50_ms"],
                     "load_1m": measured[m.name]["load_1m"],
                     "predicted_ms": predict(c, target, calibration).latency_ms,
                     "uncalibrated_ms": predict(c, target, None).latency_ms})
    meas = np.array([r["measured_p50_ms"] for r in rows])

    def score(key: str) -> dict:
        pred = np.array([r[key] for r in rows])
        err = np.abs(pred - meas) / meas * 100
        return {f"within_{k}pct": float((err <= k).mean()) for k in (10, 15, 20)} | {
            "median_abs_error_pct": float(np.median(err)), "spearman": float(spearmanr(meas, pred).statistic)}

    loads = [v["load_1m"] for v in measured.values()]
    again = np.array([r["remeasured_p50_ms"] for r in rows])
    repeat = np.abs(again / meas - 1) * 100  # the same model measured twice, the same way
    repeatability = {"median_abs_diff_pct": float(np.median(repeat)),
                     "p90_abs_diff_pct": float(np.percentile(repeat, 90)), "within_10pct": float((repeat <= 10).mean())}
    pred = np.array([r["predicted_ms"] for r in rows])
    vs_mean = np.abs(pred - (meas + again) / 2) / ((meas + again) / 2) * 100
    result = {"benchmark": "predictor_accuracy", "command": "python benchmarks/predictor_accuracy.py",
              "date": now(), "seconds": round(time.perf_counter() - t0, 1),
              "conditions": {"target": "cpu", "runtime": "onnxruntime", "precision": "fp32",
                             "threads": cond["threads"], "batch": 1,
                             "latency": "measured p50, >= 50 runs and >= 1 s after 10 warm-up (edgekd profile and "
                             "edgekd calibrate alike), both sets in one shuffled order",
                             "load_1m_during_measurement": [min(loads), max(loads)], "host": target.host},
              "calibration": {"n_models": len(cal), "families": sorted({m.family for m in cal}),
                              "in_sample_median_abs_error_pct": fit.median_abs_error_pct,
                              "cv_median_abs_error_pct": fit.cv_median_abs_error_pct,
                              "cv_within_10pct": fit.cv_within_10pct},
              "holdout": rows, "calibrated": score("predicted_ms"), "uncalibrated": score("uncalibrated_ms"),
              "repeatability": repeatability,
              "calibrated_vs_mean_of_both": {"within_10pct": float((vs_mean <= 10).mean()),
                                             "median_abs_error_pct": float(np.median(vs_mean))}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "predictor_accuracy.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "predictor_accuracy.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    c, u, k = r["calibrated"], r["uncalibrated"], r["calibration"]
    lo, hi = r["conditions"]["load_1m_during_measurement"]
    lines = ["# Device-model accuracy on held-out models", "",
             f"Command: `{r['command']}` ({r['date']}). Host CPU, ONNX Runtime fp32, batch 1, "
             f"{r['conditions']['threads']} threads; {r['conditions']['latency']}; 1-min load {lo}-{hi} while "
             f"measuring. Calibrated on {k['n_models']} models of {len(k['families'])} families: median error "
             f"in-sample {k['in_sample_median_abs_error_pct']:.1f}%, cross-validated (each family predicted by a fit "
             f"without it) {k['cv_median_abs_error_pct']:.1f}%, {k['cv_within_10pct']:.0%} within ±10%.", "",
             "| held-out model | GFLOP | measured p50 ms (cv) | predicted ms | error | uncalibrated ms |",
             "|---|---|---|---|---|---|"]
    for row in r["holdout"]:
        err = (row["predicted_ms"] - row["measured_p50_ms"]) / row["measured_p50_ms"] * 100
        lines.append(f"| {row['model']} | {row['gflops']:.4f} | {row['measured_p50_ms']:.4f} "
                     f"({row['measured_cv']:.2f}) | {row['predicted_ms']:.4f} | {err:+.1f}% | "
                     f"{row['uncalibrated_ms']:.4f} |")
    lines += ["", "| | within ±10% | within ±15% | within ±20% | median abs error | Spearman |",
              "|---|---|---|---|---|---|",
              f"| calibrated | {c['within_10pct']:.0%} | {c['within_15pct']:.0%} | {c['within_20pct']:.0%} | "
              f"{c['median_abs_error_pct']:.1f}% | {c['spearman']:.3f} |",
              f"| uncalibrated | {u['within_10pct']:.0%} | {u['within_15pct']:.0%} | {u['within_20pct']:.0%} | "
              f"{u['median_abs_error_pct']:.1f}% | {u['spearman']:.3f} |", "",
              f"The measurement's own repeatability: each held-out model measured twice the same way (in the same "
              f"shuffled run) differs by a median {r['repeatability']['median_abs_diff_pct']:.1f}% "
              f"(90th percentile {r['repeatability']['p90_abs_diff_pct']:.1f}%; "
              f"{r['repeatability']['within_10pct']:.0%} of the pairs within 10% of each other). Against the mean of "
              f"both measurements the calibrated predictions are {r['calibrated_vs_mean_of_both']['within_10pct']:.0%} "
              f"within ±10% (median error {r['calibrated_vs_mean_of_both']['median_abs_error_pct']:.1f}%).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
