"""Benchmark: the same student and teacher profiled on a quiet host and beside CPU hogs (one and
two busy-loop processes pinned to this process's CPUs), with ONNX Runtime at the default
inference threads. For each condition and repeat:

- p50 and p90 of student and teacher, and whether edgekd marked the figure `contended`;
- the C_hw latency ratio student / teacher four ways, each compared with its own quiet value:
  * "reference from the quiet start": the teacher measured once on the quiet host at the start
    of the run (as edgekd did before), the student measured now (beside the hogs) -- the old method;
  * "separate windows now": both measured now, one after the other (p50 / p50);
  * "interleaved p50": the teacher timed beside the student in one window, p50 / p50;
  * "interleaved p10": the same window, p10 / p10 (the runs nothing interrupted): edgekd's C_hw.

Goal: edgekd's ratio within +-5 % of its quiet value under one hog, and every contended figure
flagged.

Run:  python benchmarks/contention.py [--repeats 3] [--min-seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edgekd.convert.onnx import to_onnx
from edgekd.host import default_threads, provenance
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import ProfileSettings, profile_model
from edgekd.profilers.base import Reference
from edgekd.targets import get_target

RESULTS = Path(__file__).parent / "results"
SHAPE = [1, 3, 64, 64]


def hogs(n: int) -> list[subprocess.Popen]:
    cpus = sorted(os.sched_getaffinity(0))
    code = f"import os; os.sched_setaffinity(0, {cpus!r})\nwhile True: pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    time.sleep(1.0)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()
    time.sleep(1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    student = to_onnx(build_model(ArchSpec(width=0.5, depth=1), 3, 7), work / "student.onnx", SHAPE)
    teacher = to_onnx(build_model(ArchSpec(width=1.5, depth=3, expansion=4), 3, 7), work / "teacher.onnx", SHAPE)
    target = get_target("cpu")
    threads = default_threads()
    settings = ProfileSettings(threads=threads, warmup=20, min_runs=100, min_seconds=args.min_seconds,
                               measure_memory=False, energy_meter="none")
    one = replace(settings, attempts=1)  # a single window: what the figure would be without repeats

    def measure(path: Path, s: ProfileSettings = settings, beside: Reference | None = None):
        return profile_model(path, target, "onnxruntime", SHAPE, s, beside=beside)

    start_ref = measure(teacher)  # the run's start, quiet host: the old reference
    rows = []
    for rep in range(args.repeats):
        for n_hogs in (0, 1, 2):
            procs = hogs(n_hogs) if n_hogs else []
            try:
                st_one = measure(student, one)
                te_one = measure(teacher, one)
                inter = measure(student, one, Reference(teacher, SHAPE))
                flagged = measure(student)  # with the bounded repeats: is a contended figure marked?
            finally:
                stop(procs)
            ref = inter.conditions.reference
            rows.append({
                "repeat": rep, "hogs": n_hogs,
                "student_p50": st_one.latency_ms.p50, "student_p90": st_one.latency_ms.p90,
                "teacher_p50": te_one.latency_ms.p50, "teacher_p90": te_one.latency_ms.p90,
                "pressure": st_one.conditions.pressure.during, "pressure_source": st_one.conditions.pressure.source,
                "single_window_contended": st_one.contended is not None,
                "flagged_after_repeats": flagged.contended is not None, "attempts": flagged.conditions.attempts,
                "ratio_quiet_start_reference": st_one.latency_ms.p50 / start_ref.latency_ms.p50,
                "ratio_separate_windows": st_one.latency_ms.p50 / te_one.latency_ms.p50,
                "ratio_interleaved": ref.ratio_p50, "ratio_interleaved_p10": ref.ratio_p10,
                "load1": os.getloadavg()[0],
            })
            print(json.dumps(rows[-1]), flush=True)
    methods = ("ratio_quiet_start_reference", "ratio_separate_windows", "ratio_interleaved", "ratio_interleaved_p10")
    quiet_of = {k: statistics.median(r[k] for r in rows if r["hogs"] == 0) for k in methods}
    quiet = quiet_of["ratio_interleaved_p10"]
    summary = {}
    for n_hogs in (0, 1, 2):
        rs = [r for r in rows if r["hogs"] == n_hogs]
        summary[n_hogs] = {
            k: {"median": statistics.median(r[k] for r in rs),
                "worst_error_vs_quiet": max(abs(r[k] / quiet_of[k] - 1) for r in rs)}
            for k in methods}
        summary[n_hogs].update({
            "student_p50": statistics.median(r["student_p50"] for r in rs),
            "student_p90": statistics.median(r["student_p90"] for r in rs),
            "teacher_p50": statistics.median(r["teacher_p50"] for r in rs),
            "pressure": statistics.median(r["pressure"] for r in rs),
            "flagged": sum(r["flagged_after_repeats"] for r in rs), "single_window_contended":
                sum(r["single_window_contended"] for r in rs), "n": len(rs)})
    out = {"conditions": {"runtime": "onnxruntime", "threads": threads, "precision": "fp32", "batch": 1,
                          "shape": SHAPE, "min_seconds": args.min_seconds, "min_runs": 100, "warmup": 20,
                          "repeats": args.repeats, "host": provenance(), "source": "measured"},
           "quiet_ratio": quiet, "quiet_ratio_per_method": quiet_of, "start_reference_p50": start_ref.latency_ms.p50,
           "rows": rows, "summary": summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "contention.json").write_text(json.dumps(out, indent=1))
    lines = ["# Contention: idle vs CPU hogs (measured)", "",
             f"ONNX Runtime fp32, batch 1, input {'x'.join(map(str, SHAPE))}, {threads} threads, "
             f">= 100 runs and {args.min_seconds:g} s per window, {args.repeats} repeats per condition; host "
             f"{out['conditions']['host']['cpu']} ({out['conditions']['host']['usable_cpus']} usable CPUs). "
             f"Student EdgeNet w0.5-d1, teacher EdgeNet w1.5-d3-e4 (random weights: latency does not depend on "
             f"their values). Each ratio's error is against its own quiet value (median of the idle repeats).", "",
             "| hogs | CPU pressure | student p50 / p90 ms | teacher p50 ms | quiet-start reference, p50 (error) "
             "| separate windows, p50 (error) | interleaved, p50 (error) | interleaved, p10: edgekd's C_hw (error) "
             "| contended flagged |",
             "|---|---|---|---|---|---|---|---|---|"]
    def cell(s: dict, k: str) -> str:
        return f"{s[k]['median']:.4f} (worst {s[k]['worst_error_vs_quiet']:+.1%})".replace("+", "±")

    for n_hogs, s in summary.items():
        lines.append(f"| {n_hogs} | {s['pressure']:.0%} | {s['student_p50']:.3f} / {s['student_p90']:.3f} | "
                     f"{s['teacher_p50']:.3f} | {cell(s, 'ratio_quiet_start_reference')} | "
                     f"{cell(s, 'ratio_separate_windows')} | {cell(s, 'ratio_interleaved')} | "
                     f"{cell(s, 'ratio_interleaved_p10')} | {s['flagged']}/{s['n']} |")
    lines += ["", "Error: the largest |ratio / quiet ratio - 1| over the repeats. Command: "
              f"`python benchmarks/contention.py --repeats {args.repeats} --min-seconds {args.min_seconds:g}`."]
    (RESULTS / "contention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
