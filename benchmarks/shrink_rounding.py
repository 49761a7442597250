"""Benchmark: to what multiple should a student cut from the teacher round its channel counts?

Teachers: EfficientNet-Lite0, MobileNetV3-Large-1.0 (timm structures, no weights: timing only)
and an EdgeNet w1-d2, at 64x64, 3 bands, 7 classes. Each is cut (edgekd.models.shrink, magnitude
importance) to keep 50 % and 35 % of its channels with counts rounded to multiples of 1, 8 and
16; every cut of one teacher and keep is timed in ONE interleaved window (ONNX Runtime fp32,
batch 1, this machine's default threads; bursts of 10 runs each in turn), so the ratios hold
on a busy host. Records params, GFLOPs and p50 / p10, and each one's p50 relative to rounding
to 16.

Run:  python benchmarks/shrink_rounding.py [--min-seconds 3]
Records benchmarks/results/shrink_rounding.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgekd.convert.onnx import to_onnx
from edgekd.host import default_threads
from edgekd.models.arch import ArchSpec, TimmSpec
from edgekd.models.shrink import cut_from_teacher
from edgekd.models.sources import build_student
from edgekd.profilers import PROFILERS
from edgekd.profilers.base import time_interleaved
from edgekd.profilers.predictor import graph_costs
from edgekd.profilers.predictor.calibration import now

RESULTS = Path(__file__).parent / "results"
TEACHERS = (TimmSpec(model="efficientnet_lite0"), TimmSpec(model="mobilenetv3_large_100"), ArchSpec(width=1.0, depth=2))
SIZE, CLASSES = 64, 7


def runner(path: Path, threads: int):
    """One run of `path` as edgekd's ONNX Runtime profiler runs it (same session settings)."""
    run = PROFILERS.get("onnxruntime").load(path, threads).run
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)

    def once() -> None:
        run(x)

    return once


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-seconds", type=float, default=3.0)
    args = ap.parse_args()
    threads = default_threads()
    work = Path(tempfile.mkdtemp(prefix="edgekd-round-"))
    torch.manual_seed(0)
    x = torch.rand(16, 3, SIZE, SIZE)
    rows = []
    for spec in TEACHERS:
        teacher, _ = build_student(spec, 3, CLASSES, [0.0] * 3, [1.0] * 3, pretrained=False)
        teacher.eval()
        for keep in (0.5, 0.35):
            group = []
            for round_to in (1, 8, 16):
                student = cut_from_teacher(teacher, x, CLASSES, keep=keep, round_to=round_to).eval()
                path = to_onnx(student, work / f"{spec.name}-k{keep}-r{round_to}.onnx", [1, 3, SIZE, SIZE])
                group.append({"teacher": spec.name, "keep": keep, "round_to": round_to,
                              "params": sum(p.numel() for p in student.parameters()),
                              "gflops": graph_costs(path, [1, 3, SIZE, SIZE]).flops / 1e9, "path": path})
            samples = time_interleaved([runner(g["path"], threads) for g in group], warmup=20, min_runs=200,
                                       min_seconds=args.min_seconds)
            ref = float(np.median(samples[-1]))
            for g, s in zip(group, samples):
                g.update(p50_ms=float(np.median(s)), p10_ms=float(np.percentile(s, 10)), runs=len(s),
                         p50_vs_round16=float(np.median(s)) / ref)
                del g["path"]
                rows.append(g)
                print(f"{g['teacher']:28s} keep {keep:<4} round {g['round_to']:>2}: {g['params']:>8} params "
                      f"{g['gflops']:.4f} GFLOP p50 {g['p50_ms']:.4f} ms ({g['p50_vs_round16']:.3f} x round-16)")
    result = {"benchmark": "shrink_rounding", "command": "python benchmarks/shrink_rounding.py", "date": now(),
              "conditions": {"runtime": "onnxruntime", "precision": "fp32", "batch": 1, "threads": threads,
                             "input": [1, 3, SIZE, SIZE], "timing": "one interleaved window per teacher and keep, "
                             f">= 200 runs and >= {args.min_seconds} s", "load_1m_at_end": os.getloadavg()[0]},
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shrink_rounding.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "shrink_rounding.md").write_text(render(result))


def render(r: dict) -> str:
    c = r["conditions"]
    lines = ["# Channel rounding of students cut from the teacher", "",
             f"Command: `{r['command']}` ({r['date']}). ONNX Runtime fp32, batch 1, {c['threads']} threads, input "
             f"{c['input']}; {c['timing']}; 1-min load {c['load_1m_at_end']:.2f} at the end. Magnitude importance; "
             "teachers without weights (the structure is what is timed).", "",
             "| teacher | keep | round to | params | GFLOP | p50 ms | p10 ms | p50 / round-16 p50 |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['teacher']} | {x['keep']} | {x['round_to']} | {x['params']} | {x['gflops']:.4f} | "
                     f"{x['p50_ms']:.4f} | {x['p10_ms']:.4f} | {x['p50_vs_round16']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
