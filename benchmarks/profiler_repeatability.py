"""Benchmark: how repeatable are edgekd's measurements, what does a profile call cost, and how
do the runtimes compare on the same models?

1. Repeatability: each model is profiled 5 times per runtime, each time in a fresh process
   (`edgekd profile --no-cache`); the spread of p50 and p90 across repeats is recorded
   (goal: p50 within +-5% of the median repeat on this machine).
2. Overhead: wall time of one in-process `profile_model` call minus the timed runs it reports
   (loading the model, warm-up, statistics; memory probe and energy off, then on).
3. Cache: the same call answered from the measurement cache, as a speed-up.
4. Side by side: onnxruntime, openvino and torch latency of the teacher and the best student,
   with ratios to torch eager, from the repeats above.

Run:  python benchmarks/profiler_repeatability.py [--run RUN_DIR] [--repeats 5]
RUN_DIR is an `edgekd optimize` run (its teacher.pt and selected student are used); without it
the default-preset teacher and student architectures are built with random weights (latency
does not depend on the weights' values).
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
from pathlib import Path

from edgekd.config import RunConfig
from edgekd.host import default_threads
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import save_checkpoint
from edgekd.profilers import MeasurementCache, ProfileSettings, profile_model
from edgekd.profilers.inputs import resolve_model
from edgekd.targets import get_target

RESULTS = Path(__file__).parent / "results"
RUNTIMES = ["onnxruntime", "openvino", "torch"]


def models(run: Path | None, work: Path) -> dict[str, Path]:
    if run is not None:
        report = json.loads((run / "report.json").read_text())
        return {"teacher": run / "teacher.pt", "student": run / "candidates" / report["selected"] / "student.pt"}
    out = {}
    for role, arch in (("teacher", RunConfig().teacher_arch), ("student", ArchSpec(width=1.0, depth=1))):
        path = work / f"{role}.pt"
        save_checkpoint(path, build_model(arch, 4, 7), classes=[str(i) for i in range(7)], bands=list("RGBN"),
                        image_size=32, dataset="random-weights", role=role)
        out[role] = path
    return out


def fresh_process_profile(model: Path, runtime: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "edgekd.cli", "profile", str(model), "--runtime", runtime, "--no-cache",
           "--json", str(out), "--quiet"]
    subprocess.run(cmd, check=True, env=os.environ.copy())
    return json.loads(out.read_text())["measurements"][0]


def spread(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"values": [round(v, 5) for v in values], "median": round(med, 5),
            "max_rel_dev_pct": round(100 * max(abs(v - med) / med for v in values), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-bench-"))
    paths = models(args.run, work)
    threads = default_threads()

    repeat = {}
    for role, path in paths.items():
        for rt in RUNTIMES:
            ms = [fresh_process_profile(path, rt, work / f"{role}-{rt}-{i}.json") for i in range(args.repeats)]
            repeat[f"{role}/{rt}"] = {"p50": spread([m["latency_ms"]["p50"] for m in ms]),
                                      "p90": spread([m["latency_ms"]["p90"] for m in ms]),
                                      "n": [m["latency_ms"]["n"] for m in ms], "cv_median": statistics.median(
                                          m["latency_ms"]["cv"] for m in ms)}
            print(role, rt, repeat[f"{role}/{rt}"]["p50"])

    target = get_target("cpu")
    student = resolve_model(paths["student"], None, 1, work / "onnx")
    overhead = {}
    for label, settings in (
        ("no memory probe, no energy", ProfileSettings(threads=threads, measure_memory=False, energy_meter="none")),
        ("memory probe + energy meter", ProfileSettings(threads=threads)),
    ):
        t = time.perf_counter()
        m = profile_model(student.onnx_path, target, "onnxruntime", student.input_shape, settings)
        wall = time.perf_counter() - t
        overhead[label] = {"wall_s": round(wall, 3), "timed_s": round(m.latency_ms.total_s, 3),
                           "overhead_s": round(wall - m.latency_ms.total_s, 3)}
    cache = MeasurementCache(work / "cache.sqlite")
    settings = ProfileSettings(threads=threads)
    t = time.perf_counter()
    profile_model(student.onnx_path, target, "onnxruntime", student.input_shape, settings, cache)
    miss = time.perf_counter() - t
    t = time.perf_counter()
    hit = profile_model(student.onnx_path, target, "onnxruntime", student.input_shape, settings, cache)
    hit_s = time.perf_counter() - t
    assert hit.source["latency"] == "cached"

    side = {}
    for role in paths:
        torch_p50 = repeat[f"{role}/torch"]["p50"]["median"]
        side[role] = {rt: {"p50_ms": repeat[f"{role}/{rt}"]["p50"]["median"],
                           "p90_ms": repeat[f"{role}/{rt}"]["p90"]["median"],
                           "speedup_vs_torch": round(torch_p50 / repeat[f"{role}/{rt}"]["p50"]["median"], 2)}
                      for rt in RUNTIMES}
    result = {
        "benchmark": "profiler_repeatability", "command": "python benchmarks/profiler_repeatability.py",
        "models": {k: str(v) for k, v in paths.items()}, "input_shape": student.input_shape,
        "conditions": {"threads": threads, "batch": 1, "precision": "fp32", "warmup": 10, "min_runs": 50,
                       "min_seconds": 1.0, "source": "measured", "repeats": args.repeats,
                       "each repeat": "a fresh process, --no-cache"},
        "repeatability": repeat, "overhead_per_call": overhead,
        "cache": {"miss_s": round(miss, 3), "hit_s": round(hit_s, 4), "speedup": round(miss / hit_s, 1)},
        "side_by_side": side,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profiler_repeatability.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "profiler_repeatability.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    c = r["conditions"]
    lines = ["# Profiler repeatability, overhead, cache and runtimes side by side", "",
             f"Command: `{r['command']}`. Input {r['input_shape']}, batch 1, fp32, {c['threads']} threads, "
             f"{c['warmup']} warm-up, >= {c['min_runs']} runs and >= {c['min_seconds']} s; {c['repeats']} repeats, "
             "each in a fresh process. All figures measured.", "",
             "| model / runtime | p50 median ms | p50 max dev | p90 median ms | p90 max dev | median CV |",
             "|---|---|---|---|---|---|"]
    for k, v in r["repeatability"].items():
        lines.append(f"| {k} | {v['p50']['median']:.4f} | ±{v['p50']['max_rel_dev_pct']:.1f}% | "
                     f"{v['p90']['median']:.4f} | ±{v['p90']['max_rel_dev_pct']:.1f}% | {v['cv_median']:.1%} |")
    lines += ["", "| profile call | wall s | timed runs s | overhead s |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['wall_s']} | {v['timed_s']} | {v['overhead_s']} "
              "|" for k, v in r["overhead_per_call"].items()]
    ca = r["cache"]
    lines += ["", f"Cache: miss {ca['miss_s']} s, hit {ca['hit_s']} s, speed-up {ca['speedup']}x.", "",
              "| model | runtime | p50 ms | p90 ms | speed-up vs torch eager (p50) |", "|---|---|---|---|---|"]
    for role, rts in r["side_by_side"].items():
        for rt, v in rts.items():
            lines.append(f"| {role} | {rt} | {v['p50_ms']:.4f} | {v['p90_ms']:.4f} | {v['speedup_vs_torch']}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
