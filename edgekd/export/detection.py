"""A detector as one deployable ONNX graph: raw [0, 1] NCHW input at a fixed size, batch 1,
decoding and NMS inside, outputs `boxes` (D x 4, x1 y1 x2 y2 in input pixels), `scores` (D) and
`labels` (D, class indices in the order of the metadata's class names).

The metadata records what a caller needs to feed it and read it: class names, input size, the
letterbox rule (scale to fit, pad right and bottom with 0), score and IoU thresholds, max
detections. `check_nms_export` runs the graph with ONNX Runtime on validation images and compares
its detections with PyTorch's decoding and NMS of the same model."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import ExportError
from ..files import first_line
from ..models.detnet import WithNMS
from .base import detects_itself

OUTPUT_NAMES = ("boxes", "scores", "labels")
LETTERBOX_RULE = "scale the longer side to the input size keeping the aspect ratio, pad right and bottom with 0"


def nms_metadata(classes: list[str], size: int, score: float, iou: float, max_detections: int) -> dict[str, str]:
    return {"task": "detection", "classes": ",".join(classes), "input_size": str(size), "letterbox": LETTERBOX_RULE,
            "outputs": "boxes D x 4 (x1 y1 x2 y2, input pixels), scores D, labels D (class index)",
            "score_threshold": f"{score:g}", "iou_threshold": f"{iou:g}", "max_detections": str(max_detections),
            "input_layout": "NCHW, batch 1", "input_range": "0..1 (normalisation is inside the model)"}


def export_with_nms(model: nn.Module, path: Path, in_channels: int, size: int, metadata: dict[str, str],
                    score: float, iou: float, max_detections: int) -> Path:
    """Write `model` with decoding and NMS inside as ONNX at `path` (complete or absent)."""
    wrapped = WithNMS(model.eval(), size, score, iou, max_detections).eval()
    tmp = path.with_suffix(".tmp.onnx")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (torch.rand(1, in_channels, size, size),), str(tmp), dynamo=False,
                              opset_version=17, input_names=["input"], output_names=list(OUTPUT_NAMES),
                              dynamic_axes={n: {0: "detections"} for n in OUTPUT_NAMES})
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        tmp.replace(path)
    except Exception as exc:
        raise ExportError(f"ONNX export with NMS to {path} failed: {first_line(exc, 240)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class NMSAgreement:
    images: int
    torch_boxes: int  # PyTorch's detections over the images
    matched: int  # of those, found by the export (same class, IoU >= 0.5)
    extra: int  # the export's detections PyTorch does not have
    mean_iou: float  # of the matched pairs
    max_score_diff: float  # of the matched pairs

    def text(self) -> str:
        return (f"{self.matched} of {self.torch_boxes} PyTorch detections found by the graph (same class, IoU >= "
                f"0.5; mean IoU {self.mean_iou:.4f}, max |score difference| {self.max_score_diff:.2g}), "
                f"{self.extra} extra, on {self.images} validation images")

    @property
    def agrees(self) -> bool:
        return self.matched == self.torch_boxes and self.extra == 0


def check_nms_export(model: nn.Module, path: Path, x: torch.Tensor, score: float, iou: float,
                     max_detections: int, threads: int = 1) -> NMSAgreement:
    """The graph's detections (ONNX Runtime for a .onnx, OpenVINO for a .xml) against PyTorch's
    (WithNMS of the same model; a detector with its own NMS, its own detections at the same
    thresholds) on images `x`."""
    run = _runner(path, threads)
    det: Any = getattr(model, "inner", None) if detects_itself(model) else None
    ref = det.detect if det is not None else WithNMS(model.eval(), x.shape[-1], score, iou, max_detections).eval()
    with det.thresholds(score, iou, max_detections) if det is not None else contextlib.nullcontext():
        return _agreement(run, ref, x)


def _agreement(run: Callable[[np.ndarray], list[np.ndarray]],
               ref: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
               x: torch.Tensor) -> NMSAgreement:
    from torchvision.ops import box_iou

    total = matched = extra = 0
    ious: list[float] = []
    diffs: list[float] = [0.0]
    for img in x:
        with torch.no_grad():
            rb, rs, rl = ref(img[None])
        gb, gs, gl = (torch.from_numpy(np.asarray(a)) for a in run(img[None].numpy()))
        total += len(rb)
        if len(rb) and len(gb):
            m = box_iou(rb, gb.float()) * (rl[:, None] == gl[None, :].long())
            best, j = m.max(1)
            hit = best >= 0.5
            matched += int(hit.sum())
            ious += best[hit].tolist()
            diffs += (rs[hit] - gs.float()[j[hit]]).abs().tolist()
            extra += len(gb) - len(set(j[hit].tolist()))
        else:
            extra += len(gb)
    return NMSAgreement(images=len(x), torch_boxes=total, matched=matched, extra=extra,
                        mean_iou=float(np.mean(ious)) if ious else 1.0, max_score_diff=float(max(diffs)))


def _runner(path: Path, threads: int):  # noqa: ANN202  (a function of an image batch to boxes, scores, labels)
    if path.suffix == ".xml":
        import openvino as ov

        # FP32 as exported: without the hint, CPUs with bf16/AMX units run it in bf16
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                             "INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: [compiled(x)[compiled.output(n)] for n in OUTPUT_NAMES]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(list(OUTPUT_NAMES), {"input": x})


def detections_as_rows(path: Path, threads: int, size: int, num_classes: int
                       ) -> Callable[[np.ndarray], np.ndarray]:
    """A function of an image batch to the graph's detections (ONNX Runtime for a .onnx,
    OpenVINO for a .xml), image by image, encoded as detector rows N x A x (K + 5) (what parity
    compares with PyTorch's)."""
    from ..models.detnet import encode

    run = _runner(path, threads)

    def rows(x: np.ndarray) -> np.ndarray:
        out = []
        for img in x:
            b, s, c = (torch.from_numpy(np.asarray(a)) for a in run(np.ascontiguousarray(img[None], np.float32)))
            out.append(encode(b.float(), s.float(), c.long(), size, num_classes))
        return torch.stack(out).numpy()

    return rows


def openvino_with_nms(model: nn.Module, graph: Path, x: torch.Tensor, threads: int = 1) -> tuple[Path | None, str]:
    """The ONNX graph with NMS inside as OpenVINO IR (FP32, `STEM.nms.xml` beside it; OpenVINO
    runs its NonMaxSuppression as its own NMS operation), checked like the ONNX graph: (the IR,
    its agreement with PyTorch), or (None, why not)."""
    import openvino as ov

    xml = graph.with_name(graph.name.removesuffix(".onnx") + ".xml")
    try:
        ov.save_model(ov.convert_model(str(graph)), str(xml), compress_to_fp16=False)
    except Exception as exc:  # OpenVINO's converter raises its own types for graphs it cannot take
        return None, f"OpenVINO could not convert the graph with NMS: {first_line(exc, 200)}"
    meta = {m.key: m.value for m in onnx.load(str(graph), load_external_data=False).metadata_props}
    agreement = check_nms_export(model, xml, x, float(meta["score_threshold"]), float(meta["iou_threshold"]),
                                 int(meta["max_detections"]), threads)
    return xml, agreement.text() + " (OpenVINO CPU, compiled with INFERENCE_PRECISION_HINT f32)"


CHECKED_IMAGES = 16  # validation images the NMS graph is compared with PyTorch on


def deployable(model: nn.Module, x_val: torch.Tensor, classes: list[str], out_dir: Path, stem: str,
               extra: dict[str, str], threads: int = 1) -> tuple[Path, NMSAgreement]:
    """`out_dir/STEM.nms.onnx` (decoding and NMS inside, the task's export thresholds) and its
    agreement with PyTorch on the first validation images."""
    from ..tasks.detection import EXPORT_SCORE, MAX_DETECTIONS, NMS_IOU

    size, channels = int(x_val.shape[-1]), int(x_val.shape[1])
    meta = {**nms_metadata(classes, size, EXPORT_SCORE, NMS_IOU, MAX_DETECTIONS), **extra}
    if detects_itself(model):  # its own graph, decoding and NMS at the export thresholds
        det: Any = model.inner
        with det.thresholds(EXPORT_SCORE, NMS_IOU, MAX_DETECTIONS):
            path = det.deployable_onnx(out_dir / f"{stem}.nms.onnx", [1, channels, size, size], meta)
    else:
        path = export_with_nms(model, out_dir / f"{stem}.nms.onnx", channels, size, meta, EXPORT_SCORE, NMS_IOU,
                               MAX_DETECTIONS)
    return path, check_nms_export(model, path, x_val[:CHECKED_IMAGES], EXPORT_SCORE, NMS_IOU, MAX_DETECTIONS, threads)


def nms_engine(graph: Path, in_channels: int, size: int) -> tuple[Path | None, str]:
    """A TensorRT FP16 engine of the graph with NMS inside, built where TensorRT runs (its ONNX
    parser maps NonMaxSuppression to TensorRT's NMS layer): (the engine, a note), or (None, why not)."""
    from ..profilers.tensorrt import build_engine, unavailable_reason

    reason = unavailable_reason()
    if reason:
        return None, f"no TensorRT engine of the NMS graph: {reason}; build it on the board (edgekd export there)"
    engine, notes = build_engine(graph, [1, in_channels, size, size], "fp16", cache_dir=graph.parent / ".edgekd-trt")
    path = graph.with_suffix(".fp16.engine")
    path.write_bytes(engine)
    return path, "; ".join(notes)
