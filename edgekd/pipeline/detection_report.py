"""What a detection run adds to its report: COCO figures of the teacher and the selected student,
the deployable ONNX graph with decoding and NMS inside (checked against PyTorch), the end-to-end
stage times at batch 1, and drawings of validation images with their boxes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..console import ConsoleObserver
from ..data import Dataset
from ..export.detection import CHECKED_IMAGES, deployable
from ..models.io import load_checkpoint
from ..report.model import DetectionFigures, DetectionModelMetrics, DetectionSummary, StageTimes
from ..tasks.detection import EXPORT_SCORE, coco_metrics, detections
from .plan import RunPlan
from .stages import Selection, TeacherResult

DRAWN_IMAGES = 4
STAGE_RUNS = 50


def figures(out: torch.Tensor, y: Any, classes: list[str], split: str) -> DetectionFigures:
    m = coco_metrics(detections(out), y, classes)
    return DetectionFigures(split=split, n=len(y), map50=m["map50"], map=m["map"], map75=m["map75"],
                            map_small=m["map_small"], map_medium=m["map_medium"], map_large=m["map_large"],
                            per_class_ap50=dict(zip(classes, m["per_class"])))


def _predict(model: nn.Module) -> Callable[[Any], torch.Tensor]:
    from ..distill.trainer import predict_logits

    return lambda x: predict_logits(model, x)


def detection_summary(plan: RunPlan, teacher: TeacherResult, choice: Selection, observer: ConsoleObserver
                      ) -> DetectionSummary:
    ds = plan.ds
    student, _ = load_checkpoint(plan.run_dir / "candidates" / choice.best.arch.name / "student.pt")
    student.eval()
    out, vals = [], {}
    for name, model, val in (("teacher", teacher.model, teacher.val_logits), (choice.best.name, student, None)):
        logits = val if val is not None else _predict(model)(ds.x_val)
        vals[name] = logits
        test = None
        if ds.x_test is not None and ds.y_test is not None:
            test = figures(_predict(model)(ds.x_test), ds.y_test, ds.classes, "test")
        out.append(DetectionModelMetrics(model=name, validation=figures(logits, ds.y_val, ds.classes, "validation"),
                                         test=test))
    from ..export.run import calibration_note

    summary = DetectionSummary(figures=out, calibration=calibration_note(ds, plan.cfg.calibration_size, plan.cfg.seed))
    path, agreement = deployable(student, ds.x_val[:CHECKED_IMAGES], ds.classes, plan.run_dir / "exports",
                                 f"student-{choice.best.arch.name}", {"run_id": plan.run_id, "arch": choice.best.name},
                                 plan.threads)
    summary.nms_export = str(path.relative_to(plan.run_dir))
    summary.nms_agreement = agreement.text()
    observer.say(f"export onnx with NMS inside: {path} ({agreement.text()})",
                 style=None if agreement.agrees else "yellow")
    summary.stages = stage_times(plan, path)
    summary.drawings = [draw(plan, vals["teacher"], vals[choice.best.name])]
    return summary


def stage_times(plan: RunPlan, nms_graph: Path) -> StageTimes:
    """p50 of each stage, measured here with ONNX Runtime at the run's threads: the letterbox of a
    camera frame (uint8 HWC, the data's image size) to the input, the network graph alone (the
    plain ONNX export) and the NMS graph; the two graphs timed interleaved, run by run."""
    import onnxruntime as ort

    from ..data.boxes import letterbox

    ds, threads = plan.ds, plan.threads
    plain = nms_graph.with_name(nms_graph.name.replace(".nms.onnx", ".onnx"))  # the network alone, if exported
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    nms = ort.InferenceSession(str(nms_graph), opts, providers=["CPUExecutionProvider"])
    net = ort.InferenceSession(str(plain), opts, providers=["CPUExecutionProvider"]) if plain.is_file() else None
    x = ds.x_val[:1].numpy()
    frame = (np.random.default_rng(0).random((ds.image_size, ds.image_size, 3)) * 255).astype(np.uint8)
    t_pre, t_net, t_all = [], [], []
    for _ in range(STAGE_RUNS):
        t0 = time.perf_counter()
        letterbox(frame.transpose(2, 0, 1).astype(np.float32) / 255.0, ds.image_size)
        t_pre.append(time.perf_counter() - t0)
        if net is not None:
            t0 = time.perf_counter()
            net.run(None, {net.get_inputs()[0].name: x})
            t_net.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nms.run(None, {"input": x})
        t_all.append(time.perf_counter() - t0)
    pre, whole = 1e3 * float(np.median(t_pre)), 1e3 * float(np.median(t_all))
    network = 1e3 * float(np.median(t_net)) if t_net else whole
    frame_ms = pre + whole
    return StageTimes(source=f"measured on this machine, interleaved run by run, {STAGE_RUNS} runs each",
                      runtime="onnxruntime (fp32)", threads=threads, runs=STAGE_RUNS,
                      frame=f"{ds.image_size}x{ds.image_size} px, one slice (letterboxed)", preprocess_ms=round(pre, 4),
                      network_ms=round(network, 4), postprocess_ms=round(max(whole - network, 0.0), 4),
                      frame_ms=round(frame_ms, 4), fps=round(1e3 / frame_ms, 2))


def draw(plan: RunPlan, teacher: torch.Tensor, student: torch.Tensor) -> str:
    """A PNG of validation images with the true boxes, the teacher's and the student's detections
    (score >= EXPORT_SCORE)."""
    from ..report.plots import box_drawing

    ds: Dataset = plan.ds
    n = min(DRAWN_IMAGES, len(ds.y_val))
    idx = torch.linspace(0, len(ds.y_val) - 1, n).long()
    t_det, s_det = detections(teacher[idx], EXPORT_SCORE), detections(student[idx], EXPORT_SCORE)
    rows = []
    for j, i in enumerate(idx.tolist()):
        y = ds.y_val[i]
        truth = y[y[:, 0] >= 0]
        rows.append((ds.x_val[i].numpy(), (truth[:, 1:5].numpy(), truth[:, 0].long().numpy()),
                     (t_det[j][0].numpy(), t_det[j][2].numpy()), (s_det[j][0].numpy(), s_det[j][2].numpy())))
    box_drawing(plan.run_dir / "detections.png", rows, ds.classes)
    return "detections.png"
