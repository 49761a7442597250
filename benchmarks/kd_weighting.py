"""Benchmark: dynamic weighting and feature-importance preservation vs plain response KD, on the
same student, teacher, epochs and data, over 3 seeds.

Variants: response KD; response with per-sample weighting by the teacher's entropy, and by the
teacher-student disagreement; response + feature (MSE); response + feature L1; response +
feature L1 weighted by the teacher's attention map. Validation accuracy per seed, mean and
spread, and training seconds.

Run:  python benchmarks/kd_weighting.py [--data DIR] [--epochs 6] [--teacher-epochs 8]
(default data: the synthetic demo set; `--data ../shared/data/rsscn7-64` for real aerial images).
Records benchmarks/results/kd_weighting.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgekd.config import build_config
from edgekd.data import load_dataset
from edgekd.distill.losses import KDSettings
from edgekd.distill.teacher import TeacherOutputs
from edgekd.distill.trainer import evaluate, predict_logits, train
from edgekd.host import default_train_threads
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model

RESULTS = Path(__file__).parent / "results"
STUDENT = ArchSpec(width=0.5, depth=1)
VARIANTS = {
    "response": ([("response", 1.0)], {}),
    "response, entropy-weighted": ([("response", 1.0)], {"weighting": "entropy"}),
    "response, disagreement-weighted": ([("response", 1.0)], {"weighting": "disagreement"}),
    "response + feature:0.5 (MSE)": ([("response", 1.0), ("feature", 0.5)], {}),
    "response + feature:0.5 (L1)": ([("response", 1.0), ("feature", 0.5)], {"feature_distance": "l1"}),
    "response + feature:0.5 (L1, attention)": ([("response", 1.0), ("feature", 0.5)],
                                              {"feature_distance": "l1", "feature_importance": "attention"}),
}


def data_and_teacher(data: Path | None, teacher_epochs: int):
    """(data set, config, teacher trained on it, its val accuracy, its training seconds, training
    threads): the demo set (300 per class) or an image folder, and the default preset's teacher."""
    threads = default_train_threads()
    torch.set_num_threads(threads)
    cfg = build_config({"preset": "default"})
    ds = load_dataset(data, seed=0, val_fraction=cfg.val_fraction, image_size=None,
                      samples_per_class=300 if data is None else 0, max_samples_per_class=None)
    mean, std = ds.channel_stats()
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher_arch, ds.in_channels, len(ds.classes), mean, std)
    t0 = time.perf_counter()
    train(teacher, ds.x_train, ds.y_train, epochs=teacher_epochs, batch_size=64, lr=3e-3, seed=0)
    seconds = time.perf_counter() - t0
    return ds, cfg, teacher, evaluate(predict_logits(teacher, ds.x_val), ds.y_val)["accuracy"], seconds, threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tag", default="", help="suffix of the result files, e.g. rsscn7")
    args = ap.parse_args()
    stem = "kd_weighting" + (f"_{args.tag}" if args.tag else "")
    ds, cfg, teacher, teacher_acc, teacher_s, threads = data_and_teacher(args.data, args.teacher_epochs)
    mean, std = ds.channel_stats()
    print(f"teacher {cfg.teacher_arch.name}: {teacher_acc:.4f} in {teacher_s:.0f} s", flush=True)
    out = TeacherOutputs.build(Path(tempfile.mkdtemp(prefix="edgekd-kdw-")), [teacher], ds.x_train, features=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict] = {}
    for name, (terms, kd) in VARIANTS.items():
        accs, secs = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            m = build_model(STUDENT, ds.in_channels, len(ds.classes), mean, std)
            t0 = time.perf_counter()
            train(m, ds.x_train, ds.y_train, epochs=args.epochs, batch_size=64, lr=3e-3, seed=seed, teacher=out,
                  terms=terms, kd=KDSettings(**kd), teacher_channels=teacher.stage_channels)
            secs.append(time.perf_counter() - t0)
            accs.append(evaluate(predict_logits(m, ds.x_val), ds.y_val)["accuracy"])
        results[name] = {"accuracy": accs, "mean": statistics.mean(accs), "stdev": statistics.stdev(accs),
                         "train_seconds": statistics.mean(secs)}
        print(name, results[name], flush=True)
    base = results["response"]["mean"]
    record = {"data": ds.name, "synthetic": ds.synthetic, "classes": len(ds.classes), "train": len(ds.y_train),
              "val": len(ds.y_val), "image_size": ds.image_size, "student": STUDENT.name,
              "teacher": cfg.teacher_arch.name, "teacher_accuracy": teacher_acc, "epochs": args.epochs,
              "teacher_epochs": args.teacher_epochs, "seeds": seeds, "train_threads": threads, "results": results,
              "source": "measured"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=1))
    lines = ["# Dynamic weighting and feature-importance KD vs plain response KD (measured)", "",
             f"Data: {ds.name} ({'synthetic' if ds.synthetic else 'real'}), {len(ds.classes)} classes, "
             f"{len(ds.y_train)} train / {len(ds.y_val)} val, {ds.image_size} px. Teacher {cfg.teacher_arch.name} "
             f"({args.teacher_epochs} epochs, val accuracy {teacher_acc:.4f}); student EdgeNet {STUDENT.name}, "
             f"{args.epochs} KD epochs, seeds {args.seeds}, alpha 0.5, temperature 4, {threads} training threads.",
             "", "| variant | val accuracy per seed | mean ± sd | vs response | train s |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {', '.join(f'{a:.4f}' for a in r['accuracy'])} | {r['mean']:.4f} ± "
                     f"{r['stdev']:.4f} | {100 * (r['mean'] - base):+.2f} pts | {r['train_seconds']:.1f} |")
    lines += ["", "Command: `python benchmarks/kd_weighting.py" + (f" --data {args.data}" if args.data else "")
              + f" --epochs {args.epochs} --teacher-epochs {args.teacher_epochs}"
              + (f" --tag {args.tag}" if args.tag else "") + "`."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
