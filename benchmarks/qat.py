"""Benchmark: quantization-aware distillation (int8-qat) vs post-training INT8 vs FP32, for a
small student and a larger one, over 3 seeds, with measured latency side by side.

Per student and seed: the student is distilled from the teacher for --epochs epochs (FP32);
PTQ is that student quantized by ONNX Runtime's static QDQ quantization (edgekd's onnx-int8:
U8S8, per-channel weights, 300 calibration images); QAT-KD fine-tunes a fake-quantized copy
(BatchNorm folded, NNCF quantizers) with the same response KD for --qat-epochs epochs at a
tenth of the learning rate (edgekd's int8-qat). "FP32 +extra" continues the FP32 student for the
same extra epochs at the same rate, so a QAT gain is not just more training. Accuracy is that of
the exported ONNX graph run by ONNX Runtime on the validation split.

Latency (seed 0): each student's FP32, PTQ and QAT graphs timed in one process, interleaved in
bursts, with ONNX Runtime and with OpenVINO (IR converted from each graph), batch 1.

Run:  python benchmarks/qat.py [--data DIR] [--epochs 6] [--qat-epochs 2] [--teacher-epochs 8]
Records benchmarks/results/qat.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.convert.onnx import to_onnx
from edgekd.convert.qat import prepare_qat, qat_to_onnx
from edgekd.convert.qdq import calibration_batches, quantize_qdq
from edgekd.distill.teacher import TeacherOutputs
from edgekd.distill.trainer import evaluate, train
from edgekd.export.run import calibration_subset
from edgekd.host import default_threads
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers.runner import onnx_logits

RESULTS = Path(__file__).parent / "results"
STUDENTS = {"small": ArchSpec(width=0.5, depth=1), "larger": ArchSpec(width=1.0, depth=2)}
LR = 3e-3


def _accuracy(path: Path, ds, precision: str = "int8") -> float:
    return evaluate(onnx_logits(path, ds.x_val, 2, precision=precision), ds.y_val)["accuracy"]


def _one(arch: ArchSpec, seed: int, ds, teacher_out, args, work: Path) -> dict:
    mean, std = ds.channel_stats()
    torch.manual_seed(seed)
    m = build_model(arch, ds.in_channels, len(ds.classes), mean, std)
    shape = [1, ds.in_channels, ds.image_size, ds.image_size]
    t0 = time.perf_counter()
    train(m, ds.x_train, ds.y_train, epochs=args.epochs, batch_size=64, lr=LR, seed=seed, teacher=teacher_out)
    fp32_s = time.perf_counter() - t0
    d = work / f"{arch.name}-s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    fp32 = to_onnx(m, d / "fp32.onnx", shape)
    calib = calibration_subset(ds, 300, seed)
    ptq = quantize_qdq(fp32, d / "ptq.onnx", calibration_batches(calib, shape, n=len(calib)))
    more = copy.deepcopy(m)
    train(more, ds.x_train, ds.y_train, epochs=args.qat_epochs, batch_size=64, lr=LR / 10, seed=seed + 100,
          teacher=teacher_out)
    extra = to_onnx(more, d / "fp32_extra.onnx", shape)
    t0 = time.perf_counter()
    q, folded = prepare_qat(copy.deepcopy(m), torch.from_numpy(calib))
    train(q, ds.x_train, ds.y_train, epochs=args.qat_epochs, batch_size=64, lr=LR / 10, seed=seed + 100,
          teacher=teacher_out)
    qat_s = time.perf_counter() - t0
    qat = qat_to_onnx(q, d / "qat.onnx", shape)
    row = {"fp32": _accuracy(fp32, ds, "fp32"), "ptq": _accuracy(ptq, ds), "qat": _accuracy(qat, ds),
           "fp32_extra": _accuracy(extra, ds, "fp32"), "fp32_train_s": fp32_s, "qat_train_s": qat_s,
           "batchnorms_folded": folded, "paths": {"fp32": str(fp32), "ptq": str(ptq), "qat": str(qat)}}
    print(arch.name, seed, {k: v for k, v in row.items() if k != "paths"}, flush=True)
    return row


def _latency(paths: dict[str, str], shape: list[int], threads: int, rounds: int = 30, burst: int = 20
             ) -> dict[str, dict[str, float]]:
    """p50 and p10 (ms) of each graph with ONNX Runtime and with OpenVINO, all timed interleaved."""
    import onnxruntime as ort
    import openvino as ov

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    runners = {}
    for k, p in paths.items():
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
        s = ort.InferenceSession(p, o, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        runners[f"onnxruntime/{k}"] = (lambda s=s, name=name: s.run(None, {name: x}))
        c = ov.Core().compile_model(p, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                               "INFERENCE_PRECISION_HINT": "f32"})
        req = c.create_infer_request()
        runners[f"openvino/{k}"] = (lambda req=req: req.infer({0: x}))
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, run in runners.items():
            run()
            run()  # untimed: the switch
            for _ in range(burst):
                t0 = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"p50": float(np.percentile(v, 50)), "p10": float(np.percentile(v, 10)), "n": len(v)}
            for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    stem = "qat" + (f"_{args.tag}" if args.tag else "")
    from kd_weighting import data_and_teacher  # the same data and teacher as the KD-weighting benchmark

    ds, cfg, teacher, teacher_acc, seconds, threads = data_and_teacher(args.data, args.teacher_epochs)
    print(f"teacher {cfg.teacher_arch.name}: {teacher_acc:.4f} in {seconds:.0f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="edgekd-qat-"))
    teacher_out = TeacherOutputs.build(work / "teacher_cache", [teacher], ds.x_train)
    seeds = [int(s) for s in args.seeds.split(",")]
    shape = [1, ds.in_channels, ds.image_size, ds.image_size]
    results = {}
    for label, arch in STUDENTS.items():
        runs = [_one(arch, s, ds, teacher_out, args, work) for s in seeds]
        load = os.getloadavg()[0]
        lat = _latency(runs[0]["paths"], shape, default_threads())
        results[label] = {"arch": arch.name, "runs": [{k: v for k, v in r.items() if k != "paths"} for r in runs],
                          "latency_ms": lat, "load1_before_latency": load,
                          **{f"{k}_mean": statistics.mean(r[k] for r in runs) for k in
                             ("fp32", "ptq", "qat", "fp32_extra")}}
    record = {"data": ds.name, "synthetic": ds.synthetic, "classes": len(ds.classes), "train": len(ds.y_train),
              "val": len(ds.y_val), "image_size": ds.image_size, "teacher": cfg.teacher_arch.name,
              "teacher_accuracy": teacher_acc, "epochs": args.epochs, "qat_epochs": args.qat_epochs,
              "seeds": seeds, "train_threads": threads, "inference_threads": default_threads(), "results": results,
              "source": "measured"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=1))
    write_markdown(record, args, stem)


def write_markdown(record: dict, args: argparse.Namespace, stem: str) -> None:
    lines = ["# Quantization-aware distillation vs post-training INT8 vs FP32 (measured)", "",
             f"Data: {record['data']} ({'synthetic' if record['synthetic'] else 'real'}), {record['classes']} classes, "
             f"{record['train']} train / {record['val']} val, {record['image_size']} px. Teacher {record['teacher']} "
             f"(val accuracy {record['teacher_accuracy']:.4f}). Students distilled {record['epochs']} epochs "
             f"(response KD); QAT-KD and FP32 +extra: {record['qat_epochs']} more epochs at lr/10. Accuracy of the "
             f"ONNX graph in ONNX Runtime on the validation split, seeds {record['seeds']}.", "",
             "| student | FP32 | PTQ INT8 | QAT-KD INT8 | FP32 +extra | PTQ - FP32 | QAT - FP32 |",
             "|---|---|---|---|---|---|---|"]
    for label, r in record["results"].items():
        per = {k: ", ".join(f"{run[k]:.4f}" for run in r["runs"]) for k in ("fp32", "ptq", "qat", "fp32_extra")}
        lines.append(f"| {label} {r['arch']} | {r['fp32_mean']:.4f} ({per['fp32']}) | {r['ptq_mean']:.4f} "
                     f"({per['ptq']}) | {r['qat_mean']:.4f} ({per['qat']}) | {r['fp32_extra_mean']:.4f} | "
                     f"{100 * (r['ptq_mean'] - r['fp32_mean']):+.2f} pts | "
                     f"{100 * (r['qat_mean'] - r['fp32_mean']):+.2f} pts |")
    lines += ["", f"Latency (measured, batch 1, {record['inference_threads']} threads, seed-0 graphs, interleaved "
                  "bursts of 20 with 2 untimed runs per switch, 600 runs each); p50 / p10 in ms:", "",
              "| student | runtime | FP32 | PTQ INT8 | QAT-KD INT8 | load1 |", "|---|---|---|---|---|---|"]
    for label, r in record["results"].items():
        for rt in ("onnxruntime", "openvino"):
            cell = {k: r["latency_ms"][f"{rt}/{k}"] for k in ("fp32", "ptq", "qat")}
            lines.append(f"| {label} {r['arch']} | {rt} | " + " | ".join(
                f"{c['p50']:.4f} / {c['p10']:.4f}" for c in cell.values()) + f" | {r['load1_before_latency']:.2f} |")
    lines += ["", "Command: `python benchmarks/qat.py" + (f" --data {args.data}" if args.data else "")
              + f" --epochs {args.epochs} --qat-epochs {args.qat_epochs} --teacher-epochs {args.teacher_epochs}"
              + (f" --tag {args.tag}" if args.tag else "") + "`."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
