"""Benchmark: `edgekd optimize --preset default` on the demo set, recorded.

Records, in benchmarks/results/optimize_default.{json,md}:
- wall time per stage of the run, teacher accuracy, each candidate's accuracy with KD and measured
  latency p50/p90 (ONNX Runtime, batch 1), as in report.json;
- each candidate trained WITHOUT KD for the same epochs, seed, data order and optimiser
  (the same trainer with alpha = 1, i.e. cross-entropy only);
- the speed of the cached-teacher-logit path against recomputing teacher logits every batch:
  the same KD epochs of one student, both paths timed back to back in this process.

Run:  python benchmarks/optimize_default.py [--out runs/bench-default] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from edgekd.config import build_config
from edgekd.data import load_dataset
from edgekd.distill.losses import KDSettings
from edgekd.distill.trainer import cached_targets, evaluate, live_targets, predict_logits, train
from edgekd.models.family import build_model
from edgekd.models.io import load_checkpoint
from edgekd.pipeline import run_optimize

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-default"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-epochs", type=int, default=2, help="KD epochs timed for the cache comparison")
    args = ap.parse_args()

    cfg = build_config({"preset": "default", "out": args.out, "overwrite": True, "seed": args.seed})
    t0 = time.perf_counter()
    run_dir = run_optimize(cfg)
    report = json.loads((run_dir / "report.json").read_text())
    optimize_wall = time.perf_counter() - t0

    ds = load_dataset(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction, image_size=cfg.image_size,
                      samples_per_class=cfg.samples_per_class, max_samples_per_class=cfg.max_samples_per_class)
    mean, std = ds.channel_stats()
    teacher, _ = load_checkpoint(run_dir / "teacher.pt")
    t_train = predict_logits(teacher, ds.x_train)

    rows = []
    for c in report["candidates"]:
        arch = cfg.candidates[[a.name for a in cfg.candidates].index(c["name"])]
        plain = build_model(arch, ds.in_channels, len(ds.classes), mean, std)
        # alpha = 1: the KD loss reduces to cross-entropy; everything else is the KD run's
        train(plain, ds.x_train, ds.y_train, epochs=cfg.student_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
              seed=cfg.seed, teacher=cached_targets(t_train),
              kd=KDSettings(alpha=1.0, temperature=cfg.kd_temperature))
        no_kd = evaluate(predict_logits(plain, ds.x_val), ds.y_val)["accuracy"]
        m = c["measurement"]["latency_ms"]
        rows.append({"name": c["name"], "params": c["params"], "macs": c["macs"],
                     "val_accuracy_kd": c["val_accuracy"], "val_accuracy_no_kd": no_kd,
                     "kd_gain_points": round(100 * (c["val_accuracy"] - no_kd), 2),
                     "p50_ms": m["p50"], "p90_ms": m["p90"], "n_runs": m["n"]})

    # cached teacher logits vs a teacher forward pass per batch, same student, back to back
    arch = cfg.candidates[0]
    timings = {}
    for label, targets in (("cached", cached_targets(t_train)), ("live", live_targets(teacher))):
        student = build_model(arch, ds.in_channels, len(ds.classes), mean, std)
        t = time.perf_counter()
        train(student, ds.x_train, ds.y_train, epochs=args.cache_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
              seed=cfg.seed, teacher=targets,
              kd=KDSettings(alpha=cfg.kd_alpha, temperature=cfg.kd_temperature))
        timings[label] = time.perf_counter() - t

    tm = report["teacher"]["measurement"]
    result = {
        "benchmark": "optimize_default",
        "command": "python benchmarks/optimize_default.py",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_1_5_15_at_end": [round(v, 2) for v in os.getloadavg()]},
        "software": report["software"],
        "dataset": report["dataset"],
        "selected": report["selected"],
        "selection_reason": report["selection_reason"],
        "stage_seconds": report["stage_seconds"],
        "optimize_wall_s": round(optimize_wall, 1),
        "teacher": {"name": report["teacher"]["name"], "params": report["teacher"]["params"],
                    "val_accuracy": report["teacher"]["val_accuracy"],
                    "p50_ms": tm["latency_ms"]["p50"], "p90_ms": tm["latency_ms"]["p90"]},
        "latency_conditions": {k: tm[k] for k in ("runtime", "runtime_version", "device", "precision", "batch",
                                                  "input_shape", "threads")} | {"source": "measured"},
        "candidates": rows,
        "epochs": {"teacher": cfg.teacher_epochs, "student": cfg.student_epochs},
        "teacher_cache": {"student": arch.name, "kd_epochs": args.cache_epochs,
                          "cached_s": round(timings["cached"], 2), "live_s": round(timings["live"], 2),
                          "speedup": round(timings["live"] / timings["cached"], 2)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "optimize_default.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "optimize_default.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    lines = [
        "# optimize --preset default on the demo set", "",
        f"Command: `{r['command']}`. Machine: {r['machine']['platform']}, {r['machine']['torch_threads']} torch "
        "threads, "
        f"load average at the end {r['machine'].get('load_average_1_5_15_at_end')} (above ~2 means other work shared "
        "the 2 cores and stage times are inflated).",
        f"Data: {r['dataset']['name']} (synthetic), {r['dataset']['sizes']}. Epochs: teacher "
        f"{r['epochs']['teacher']}, students {r['epochs']['student']}.",
        f"Latency: measured, {r['latency_conditions']['runtime']} {r['latency_conditions']['runtime_version']}, "
        f"{r['latency_conditions']['precision']}, batch {r['latency_conditions']['batch']}, "
        f"{r['latency_conditions']['threads']} threads.", "",
        f"Teacher {r['teacher']['name']} ({r['teacher']['params']:,} params): val accuracy "
        f"{r['teacher']['val_accuracy']:.3f}, p50 {r['teacher']['p50_ms']:.3f} ms, p90 {r['teacher']['p90_ms']:.3f} "
        "ms.", "",
        "| student | params | MMACs | acc KD | acc no KD | KD gain (pts) | p50 ms | p90 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in r["candidates"]:
        lines.append(f"| {c['name']} | {c['params']:,} | {c['macs'] / 1e6:.2f} | {c['val_accuracy_kd']:.3f} | "
                     f"{c['val_accuracy_no_kd']:.3f} | {c['kd_gain_points']:+.1f} | {c['p50_ms']:.3f} | "
                     f"{c['p90_ms']:.3f} |")
    tc = r["teacher_cache"]
    lines += ["", f"Selected: {r['selected']} — {r['selection_reason']}", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["stage_seconds"].items()]
    lines += ["", f"Teacher-logit cache ({tc['student']}, {tc['kd_epochs']} KD epochs): cached {tc['cached_s']} s, "
              f"live teacher {tc['live_s']} s, speed-up {tc['speedup']}x.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
