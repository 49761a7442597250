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
from ..export.base import detects_itself
from ..export.detection import CHECKED_IMAGES, deployable, openvino_with_nms
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
    if "openvino" in plan.export_formats:
        xml, summary.nms_openvino_agreement = openvino_with_nms(student, path, ds.x_val[:CHECKED_IMAGES], plan.threads)
        summary.nms_openvino = str(xml.relative_to(plan.run_dir)) if xml else None
        observer.say(f"export openvino with NMS inside: {xml or 'none'} ({summary.nms_openvino_agreement})")
    if any(f.startswith("tensorrt") for f in plan.export_formats):  # the device's own NMS, where TensorRT runs
        from ..export.detection import nms_engine

        engine, note = nms_engine(path, ds.in_channels, ds.image_size)
        summary.nms_agreement += f"; {note}" + (f" ({engine.name})" if engine else "")
    observer.say(f"export onnx with NMS inside: {path} ({agreement.text()})",
                 style=None if agreement.agrees else "yellow")
    summary.stages = stage_times(plan, path, split=not detects_itself(student))
    summary.drawings = [draw(plan, vals["teacher"], vals[choice.best.name])]
    return summary


def stage_times(plan: RunPlan, nms_graph: Path, split: bool = True) -> StageTimes:
    """p50 of each stage of one camera frame, measured here with ONNX Runtime at the run's threads,
    the stages interleaved run by run: the letterbox of each slice (a frame of the data's median
    source size, or of the input size for the demo set; cut into the loader's windows with --tile,
    else letterboxed whole), the network graph alone (the plain ONNX export), the NMS graph, and
    with slices the merge of their detections. `split=False`: the network is not timed apart
    (a detector whose own graph holds its decoding and NMS)."""
    import onnxruntime as ort

    from ..data.boxes import letterbox, windows
    from ..tasks.detection import merge

    ds, threads, cfg = plan.ds, plan.threads, plan.cfg
    plain = nms_graph.with_name(nms_graph.name.replace(".nms.onnx", ".onnx"))  # the network alone, if exported
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    nms = ort.InferenceSession(str(nms_graph), opts, providers=["CPUExecutionProvider"])
    net = ort.InferenceSession(str(plain), opts, providers=["CPUExecutionProvider"]) \
        if split and plain.is_file() else None
    w, h = ds.frame_size or (ds.image_size, ds.image_size)
    frame = np.random.default_rng(0).random((ds.in_channels, h, w)).astype(np.float32)
    wins = windows(w, h, cfg.tile, cfg.tile_overlap)
    runs = max(5, STAGE_RUNS // len(wins))
    t_pre, t_net, t_nms, t_merge = [], [], [], []
    for _ in range(runs):
        found = []
        for left, top, ww, wh in wins:
            t0 = time.perf_counter()
            crop = letterbox(frame[:, top:top + wh, left:left + ww], ds.image_size)[0][None]
            t_pre.append(time.perf_counter() - t0)
            if net is not None:
                t0 = time.perf_counter()
                net.run(None, {net.get_inputs()[0].name: crop})
                t_net.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            found.append([torch.from_numpy(np.asarray(a)) for a in nms.run(None, {"input": crop})])
            t_nms.append(time.perf_counter() - t0)
        if len(wins) > 1:
            t0 = time.perf_counter()
            merge(torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found]), torch.cat([f[2] for f in found]))
            t_merge.append(time.perf_counter() - t0)
    ms = lambda v: 1e3 * float(np.median(v)) if v else 0.0  # noqa: E731
    pre, whole, mrg = ms(t_pre), ms(t_nms), ms(t_merge)
    network = ms(t_net) if t_net else whole
    frame_ms = len(wins) * (pre + whole) + mrg
    how = (f"cut into {len(wins)} slices of {cfg.tile} px overlapping by {cfg.tile_overlap} px, each letterboxed"
           if len(wins) > 1 else "letterboxed whole")
    apart = "" if net is not None else ("; no plain network graph was exported, so decoding + NMS is inside the "
                                        "network figure") if split else \
        "; the detector's own graph holds its decoding and NMS: they are inside the network figure"
    return StageTimes(source=f"measured on this machine, stages interleaved run by run, {runs} frames{apart}",
                      runtime="onnxruntime (fp32)", threads=threads, runs=runs,
                      frame=f"{w}x{h} px, {how} to {ds.image_size} px", preprocess_ms=round(pre, 4),
                      network_ms=round(network, 4), postprocess_ms=round(max(whole - network, 0.0), 4),
                      slices=len(wins), merge_ms=round(mrg, 4), frame_ms=round(frame_ms, 4),
                      fps=round(1e3 / frame_ms, 2))


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
