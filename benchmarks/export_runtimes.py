"""Benchmark: the teacher and the selected student of an `optimize` run on this CPU, side by side
in one run: PyTorch eager, ONNX Runtime FP32 and INT8, OpenVINO FP32, FP16 and INT8 —
p50/p90 latency (measured, batch 1), file size and validation accuracy of each format.

Goals (issue 6): OpenVINO INT8 >= 1.5x faster than OpenVINO FP32 with <= 1 point accuracy drop;
the best runtime >= 1.5x faster than PyTorch eager at batch 1.

Run:  python benchmarks/export_runtimes.py --run RUN_DIR [--input-size N]
Records benchmarks/results/export_runtimes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edgekd.data import dataset_from_source
from edgekd.export.run import export_formats, export_metadata
from edgekd.host import default_threads
from edgekd.models.io import load_checkpoint
from edgekd.profilers import ProfileSettings, profile_model
from edgekd.targets import get_target

RESULTS = Path(__file__).parent / "results"
FORMATS = ["onnx", "onnx-int8", "openvino", "openvino-fp16", "openvino-int8"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--calibration-size", type=int, default=300)
    args = ap.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    selected = next(c for c in report["candidates"] if c["name"] == report["selected"])
    models = {"teacher": args.run / "teacher.pt", "student": args.run / selected["checkpoint"]}  # run-relative
    threads = default_threads()
    target = get_target("cpu")
    settings = ProfileSettings(threads=threads, warmup=20, min_runs=200, min_seconds=2.0, energy_meter="none",
                               measure_memory=False)
    work = Path(tempfile.mkdtemp(prefix="edgekd-export-bench-"))
    rows = []
    for role, ckpt in models.items():
        model, meta = load_checkpoint(ckpt)
        cfg = report["config"]  # runs from before checkpoints named their data set: rebuild it from the config
        ds = dataset_from_source(meta.get("data_source") or {k: cfg[k] for k in (
            "data", "seed", "val_fraction", "image_size", "samples_per_class", "max_samples_per_class")})
        shape = [1, ds.in_channels, ds.image_size, ds.image_size]
        mean, std = model.normalize.mean.flatten().tolist(), model.normalize.std.flatten().tolist()
        exports = export_formats(model, ds, FORMATS, work / role, role, export_metadata(ds, role, "bench", mean, std),
                                 calibration_size=args.calibration_size, threads=threads)
        eager = profile_model(ckpt, target, "torch", shape, settings)
        acc_torch = exports[0].parity.accuracy_torch
        rows.append({"model": role, "format": "pytorch-eager", "runtime": "torch", "precision": "fp32",
                     "p50_ms": eager.latency_ms.p50, "p90_ms": eager.latency_ms.p90, "n": eager.latency_ms.n,
                     "size_mb": ckpt.stat().st_size / 2**20, "accuracy": acc_torch})
        for e in exports:
            m = profile_model(Path(e.path), target, e.runtime, shape, settings.__class__(
                **{**settings.__dict__, "precision": e.precision}))
            rows.append({"model": role, "format": e.format, "runtime": e.runtime, "precision": e.precision,
                         "p50_ms": m.latency_ms.p50, "p90_ms": m.latency_ms.p90, "n": m.latency_ms.n,
                         "size_mb": e.size_mb, "accuracy": e.parity.accuracy_export,
                         "top1_agreement": e.parity.top1_agreement})
            print(role, e.format, round(m.latency_ms.p50, 4), round(e.parity.accuracy_export, 4))
    summary = {}
    for role in models:
        r = {row["format"]: row for row in rows if row["model"] == role}
        best = min((row for row in r.values() if row["format"] != "pytorch-eager"), key=lambda row: row["p50_ms"])
        summary[role] = {
            "openvino_int8_speedup_vs_fp32": r["openvino"]["p50_ms"] / r["openvino-int8"]["p50_ms"],
            "openvino_int8_accuracy_drop_points": 100 * (r["openvino"]["accuracy"] - r["openvino-int8"]["accuracy"]),
            "best_format": best["format"], "best_speedup_vs_eager": r["pytorch-eager"]["p50_ms"] / best["p50_ms"],
        }
    result = {"benchmark": "export_runtimes", "command": f"python benchmarks/export_runtimes.py --run {args.run}",
              "conditions": {"target": "cpu", "threads": threads, "batch": 1, "warmup": 20, "min_runs": 200,
                             "min_seconds": 2.0, "source": "measured", "input_shape": shape,
                             "accuracy": f"validation split ({len(ds.y_val)} images) of {ds.name}"},
              "rows": rows, "summary": summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_runtimes.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "export_runtimes.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    c = r["conditions"]
    lines = ["# Formats and runtimes side by side on this CPU", "",
             f"Command: `{r['command']}`. Batch 1, input {c['input_shape']}, {c['threads']} threads, {c['warmup']} "
             f"warm-up, >= {c['min_runs']} runs and >= {c['min_seconds']} s; latency measured; accuracy on the "
             f"{c['accuracy']}.", "",
             "| model | format | runtime | precision | p50 ms | p90 ms | size MB | accuracy "
             "|", "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['format']} | {row['runtime']} | {row['precision']} | "
                     f"{row['p50_ms']:.4f} | "
                     f"{row['p90_ms']:.4f} | {row['size_mb']:.3f} | {row['accuracy']:.4f} |")
    lines += ["", "| model | OpenVINO INT8 vs FP32 (p50) | INT8 accuracy drop | fastest format | vs PyTorch eager |",
              "|---|---|---|---|---|"]
    for role, s in r["summary"].items():
        lines.append(f"| {role} | {s['openvino_int8_speedup_vs_fp32']:.2f}x | "
                     f"{s['openvino_int8_accuracy_drop_points']:+.2f} pts | "
                     f"{s['best_format']} | {s['best_speedup_vs_eager']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
