"""Benchmark (second part of the from-teacher study): which recovery schedule recovers a student
cut from the teacher best per epoch spent, and does dropping blocks (depth) beat cutting more
channels (width) at the same speed-up?

RSSCN7 at 64x64 (`../shared/data/rsscn7-64`, edgekd's seeded 80/20 split). The teacher: timm's
EfficientNet-Lite0 from its ImageNet weights, fine-tuned by cross-entropy for 3 epochs (seed 0).
Students are cut from it (`edgekd.models.shrink`, Taylor importance on 64 training images, rounded
to 16) and recovered with edgekd's trainer (AdamW, one-cycle, batch 64):

- one shot to keep 0.35, response KD (alpha 0.5, tau 4) on the teacher's outputs for the images as
  they are (edgekd's default: one teacher view), at lr 1e-3, 3e-3 (edgekd's default) and 1e-2 for 6
  epochs, and at 3e-3 for 3 and 12 epochs;
- one shot, response KD on the teacher's outputs for the 8 dihedral views of each image (flips and
  rotations: `--teacher-views 8`), lr 3e-3 and 1e-2;
- one shot, cross-entropy alone (with random flips, as edgekd trains without a teacher), lr 3e-3
  and 1e-2;
- in 3 steps (keep 0.705 of what is left each step, 2 KD epochs after each: 6 in all);
- depth and width at about the same speed-up: keep 0.5 with half the droppable blocks dropped.

Each schedule runs with 3 seeds (the calibration batch and the training order change; the teacher
and the split do not): the mean and the spread of validation accuracy. Latency: every schedule's
structure (a fresh cut: latency does not depend on the weights) exported to ONNX and timed with the
teacher in one interleaved window (ONNX Runtime fp32, batch 1, this machine's default threads).

Run:  python benchmarks/from_teacher_schedule.py [--seeds 3] [--cache FILE]
Records benchmarks/results/from_teacher_schedule.{json,md}.
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
from from_teacher import DATA, accuracy, save, time_rows

from edgekd.data import load_dataset
from edgekd.distill.losses import KDSettings
from edgekd.distill.teacher import TeacherOutputs
from edgekd.distill.trainer import train
from edgekd.models.shrink import cut_from_teacher, shrink
from edgekd.models.sources import SourceRequest, load_model
from edgekd.profilers.predictor.calibration import now

# name -> (keep, drop, steps, lr, epochs, views): views 0 = cross-entropy alone (random flips), else response KD
# on the teacher's outputs for that many dihedral views of each image (1: the images as they are)
SCHEDULES: dict[str, tuple[float, float, int, float, int, int]] = {
    "one shot, KD, lr 3e-3, 6 epochs (edgekd's defaults)": (0.35, 0.0, 1, 3e-3, 6, 1),
    "one shot, KD, lr 1e-3, 6 epochs": (0.35, 0.0, 1, 1e-3, 6, 1),
    "one shot, KD, lr 1e-2, 6 epochs": (0.35, 0.0, 1, 1e-2, 6, 1),
    "one shot, KD, lr 3e-3, 3 epochs": (0.35, 0.0, 1, 3e-3, 3, 1),
    "one shot, KD, lr 3e-3, 12 epochs": (0.35, 0.0, 1, 3e-3, 12, 1),
    "one shot, no KD (cross-entropy, flips), lr 3e-3, 6 epochs": (0.35, 0.0, 1, 3e-3, 6, 0),
    "one shot, no KD (cross-entropy, flips), lr 1e-2, 6 epochs": (0.35, 0.0, 1, 1e-2, 6, 0),
    "one shot, KD on 8 dihedral views, lr 3e-3, 6 epochs": (0.35, 0.0, 1, 3e-3, 6, 8),
    "one shot, KD on 8 dihedral views, lr 1e-2, 6 epochs": (0.35, 0.0, 1, 1e-2, 6, 8),
    "3 steps of 2 KD epochs, lr 3e-3": (0.35, 0.0, 3, 3e-3, 6, 1),
    "depth and width: keep 0.5, half the blocks dropped, KD, lr 3e-3, 6 epochs": (0.5, 0.5, 1, 3e-3, 6, 1),
}


def recover(teacher, outputs: dict, ds, k: int, schedule: tuple, seed: int) -> tuple[torch.nn.Module, float]:
    keep, drop, steps, lr, epochs, views = schedule
    take = np.sort(np.random.default_rng(seed).permutation(len(ds.y_train))[:64])
    calib = torch.as_tensor(np.asarray(ds.x_train[take]))
    calib_y = torch.as_tensor(np.asarray(ds.y_train[take]))

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, calib_y)

    step_keep = keep ** (1 / steps)
    student = cut_from_teacher(teacher, calib, k, keep=step_keep, importance="taylor", loss=loss, drop=drop)
    cut_acc = accuracy(student, ds.x_val, ds.y_val)
    kw = dict(teacher=outputs[views], terms=[("response", 1.0)], kd=KDSettings(alpha=0.5, temperature=4.0)) \
        if views else {}
    for step in range(steps):
        if step:
            student.eval()
            shrink(student.inner, calib, step_keep, "taylor", loss=loss)
        if epochs:
            train(student, ds.x_train, ds.y_train, epochs=epochs // steps, batch_size=64, lr=lr, seed=seed + 1 + step,
                  **kw)
    return student.eval(), cut_acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cache", help="JSON file of finished (schedule, seed) results, read and extended: a stopped "
                                    "run goes on where it stopped")
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    ds = load_dataset(DATA, seed=0, val_fraction=0.2, image_size=64, samples_per_class=0, max_samples_per_class=None)
    mean, std = ds.channel_stats()
    k = len(ds.classes)
    req = SourceRequest(in_channels=ds.in_channels, num_classes=k, data_mean=mean, data_std=std,
                        normalization="imagenet", require_weights=True, image_size=64)
    teacher = load_model("timm:efficientnet_lite0", req).model
    train(teacher, ds.x_train, ds.y_train, epochs=3, batch_size=64, lr=3e-3, seed=0)
    teacher.eval()
    work = Path(tempfile.mkdtemp(prefix="edgekd-schedule-"))
    outputs = {v: TeacherOutputs.build(work / "cache", [teacher], ds.x_train, views=v) for v in (1, 8)}
    done = json.loads(Path(args.cache).read_text()) if args.cache and Path(args.cache).is_file() else {}
    rows = [{"schedule": "teacher: efficientnet_lite0 (ImageNet, fine-tuned 3 epochs)", "epochs": 3,
             "accuracies": [accuracy(teacher, ds.x_val, ds.y_val)], "net": teacher}]
    print(f"teacher {rows[0]['accuracies'][0]:.3f}", flush=True)
    for name, schedule in SCHEDULES.items():
        accs, before = [], []
        for seed in range(args.seeds):
            key = f"{name}|{seed}"
            if key not in done:
                student, cut_acc = recover(teacher, outputs, ds, k, schedule, seed)
                done[key] = [cut_acc, accuracy(student, ds.x_val, ds.y_val)]
                if args.cache:
                    Path(args.cache).write_text(json.dumps(done))
            before.append(done[key][0])
            accs.append(done[key][1])
            print(f"{name} seed {seed}: {before[-1]:.3f} -> {accs[-1]:.3f}", flush=True)
        # latency depends on the structure only: time a fresh cut of it (the last step's shares)
        net, _ = recover(teacher, outputs, ds, k, (*schedule[:3], schedule[3], 0, 0), 0)
        rows.append({"schedule": name, "keep": schedule[0], "drop": schedule[1], "steps": schedule[2],
                     "lr": schedule[3], "epochs": schedule[4], "views": schedule[5], "accuracies": accs,
                     "accuracy_before_recovery": before, "dropped": len(net.source["plan"]["drop"]), "net": net})
    threads = time_rows(rows, work, [1, ds.in_channels, 64, 64])
    for r in rows:
        r.update(mean=float(np.mean(r["accuracies"])), std=float(np.std(r["accuracies"])))
    result = {"benchmark": "from_teacher_schedule", "command": "python benchmarks/from_teacher_schedule.py",
              "date": now(), "seconds": round(time.perf_counter() - t0), "args": vars(args),
              "data": {"folder": "rsscn7-64", "train": len(ds.y_train), "val": len(ds.y_val), "classes": k},
              "conditions": {"latency": f"ONNX Runtime fp32, batch 1, {threads} threads, one interleaved window, "
                                        ">= 200 runs and >= 3 s", "load_1m_at_end": os.getloadavg()[0]},
              "rows": rows}
    save("from_teacher_schedule", result, render)


def render(r: dict) -> str:
    c, d = r["conditions"], r["data"]
    lines = ["# Students cut from the teacher: recovery schedules, depth and width (RSSCN7, 64x64)", "",
             f"Command: `{r['command']}` ({r['date']}, {r['seconds']} s; args {r['args']}). {d['train']} training / "
             f"{d['val']} validation images, {d['classes']} classes; Taylor importance, rounded to 16. Latency: "
             f"{c['latency']}; 1-min load {c['load_1m_at_end']:.2f} at the end. Accuracy on the validation split: "
             f"mean ± standard deviation over {r['args']['seeds']} seeds (the teacher: one).", "",
             "| schedule | epochs | params | blocks dropped | accuracy cut (before recovery) | validation accuracy | "
             "p50 ms | speed-up vs teacher |", "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        before = f"{np.mean(x['accuracy_before_recovery']):.3f}" if "accuracy_before_recovery" in x else "-"
        acc = f"{x['mean']:.3f} ± {x['std']:.3f}" if len(x["accuracies"]) > 1 else f"{x['mean']:.3f}"
        lines.append(f"| {x['schedule']} | {x['epochs']} | {x['params']} | {x.get('dropped', '-')} | {before} | "
                     f"{acc} | {x['p50_ms']:.4f} | {x['speedup_vs_teacher']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
