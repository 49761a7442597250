"""The format table and the export-then-verify step shared by every format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from ..data.store import Images, Labels
from ..errors import ExportError
from ..profilers import PROFILERS, load_runtime
from ..registry import Registry, close_matches
from .device import Compare, DeviceParity
from .parity import Parity, ParityTolerance, check_parity, default_tolerance


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    runtime: str  # the runtime that loads it for parity and profiling
    precision: str
    needs_gpu: bool = False
    needs_calibration: bool = False
    description: str = ""


# One table lists every format; exporters, `edgekd export --help` and the benchmark walk it.
FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in [
        ExportFormat("onnx", ".onnx", "onnxruntime", "fp32", description="ONNX opset 17, dynamic batch, onnxslim"),
        ExportFormat("onnx-int8", ".int8.onnx", "onnxruntime", "int8", needs_calibration=True,
                     description="ONNX Runtime static quantization (QDQ)"),
        ExportFormat("openvino", ".xml", "openvino", "fp32", description="OpenVINO IR"),
        ExportFormat("openvino-fp16", ".fp16.xml", "openvino", "fp16", description="OpenVINO IR, FP16 weights"),
        ExportFormat("openvino-int8", ".int8.xml", "openvino", "int8", needs_calibration=True,
                     description="NNCF post-training quantization"),
        ExportFormat("onnx-int8-qat", ".int8-qat.onnx", "onnxruntime", "int8",
                     description="a quantization-aware trained student (precision int8-qat): QDQ from its own "
                                 "fake quantization, no calibration"),
        ExportFormat("openvino-int8-qat", ".int8-qat.xml", "openvino", "int8",
                     description="OpenVINO IR of the onnx-int8-qat graph"),
        ExportFormat("tensorrt-fp16", ".fp16.engine", "tensorrt", "fp16", needs_gpu=True,
                     description="TensorRT engine, built on the device it runs on"),
        ExportFormat("tensorrt-int8", ".int8.engine", "tensorrt", "int8", needs_gpu=True, needs_calibration=True,
                     description="TensorRT engine, explicit Q/DQ INT8"),
    ]
}


@dataclass
class ExportContext:
    """What an exporter may need besides the model."""

    input_shape: list[int]
    metadata: dict[str, str]
    onnx_path: Path | None = None  # the ONNX export the other formats are built from
    calibration: np.ndarray | None = None  # images for INT8 calibration (N, C, H, W)
    validation: tuple[Images, np.ndarray] | None = None  # (images, labels) for accuracy-controlled quantization
    max_accuracy_drop: float | None = None
    notes: list[str] = field(default_factory=list)
    compare: Compare | None = None  # the task's parity comparison (default: classification's)
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None  # the task's metric of (logits, labels)


# exporter(model, out_path, ctx) -> path written
Exporter = Callable[[torch.nn.Module, Path, ExportContext], Path]
EXPORTERS: Registry[Exporter] = Registry("export format")


class ExportResult(BaseModel):
    format: str
    path: str
    runtime: str
    precision: str
    size_mb: float
    parity: Parity
    tolerance: ParityTolerance
    notes: list[str] = []
    # the runtime settings the parity figures hold for (OpenVINO: device and inference precision)
    execution: dict[str, str] = {}
    # OpenVINO: agreement when compiled with the plugin's default precision, where that differs
    parity_plugin_default: Parity | None = None
    # measured through the agent: the same check on the device, with any precision fallback
    device_parity: DeviceParity | None = None


QAT_FORMATS = ("onnx-int8-qat", "openvino-int8-qat")  # built from a fake-quantized model, not a float one
BASE_FORMATS = ("onnx", "onnx-int8-qat")  # the ONNX graph the other formats are built from


# what a detector that decodes and suppresses inside its own graph (a torchvision detector) is shipped as
DETECTOR_GRAPH_FORMATS = ("onnx", "openvino")


def detects_itself(model: torch.nn.Module) -> bool:
    """A model whose export is its deployable detector graph (boxes, scores, labels out)."""
    return callable(getattr(getattr(model, "inner", None), "deployable_onnx", None))


def parse_formats(text: str) -> list[str]:
    """Formats in build order; `onnx` (for a quantization-aware model `onnx-int8-qat`) comes
    first whenever another format is built from it."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        hint = close_matches(unknown[0], FORMATS) if unknown else ""
        raise ExportError(f"unknown export format {', '.join(unknown) or '(none)'}; {hint}"
                          f"choose from: {', '.join(FORMATS)}")
    if any(n in QAT_FORMATS for n in names):
        other = [n for n in names if n not in QAT_FORMATS]
        if other:
            raise ExportError(f"{', '.join(other)} cannot be built with {', '.join(QAT_FORMATS)}: a quantization-aware "
                              "student exports to those two only, a float model to the others")
        return [n for n in QAT_FORMATS if n in names or n == "onnx-int8-qat"]
    if "onnx" not in names:
        names.insert(0, "onnx")
    return ["onnx"] + [n for n in dict.fromkeys(names) if n != "onnx"]


def export_model(fmt: str, model: torch.nn.Module, out_dir: Path, stem: str, ctx: ExportContext,
                 x_val: Images, y_val: Labels, tol: ParityTolerance | None = None,
                 threads: int = 1) -> ExportResult:
    """Export `model` to `fmt`, then check its outputs against PyTorch on the validation split;
    an export beyond the tolerance of its precision raises ExportError naming the format and
    the figures."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ExportError(f"unknown export format {fmt!r}; {close_matches(fmt, FORMATS)}choose from: "
                          f"{', '.join(FORMATS)}")
    boxes = detects_itself(model)
    if boxes and fmt not in DETECTOR_GRAPH_FORMATS:
        raise ExportError(f"{fmt}: {getattr(model, 'name', 'this detector')} ships as its FP32 graph with its own "
                          f"decoding and NMS inside; export it as {' or '.join(DETECTOR_GRAPH_FORMATS)}")
    if fmt not in BASE_FORMATS and ctx.onnx_path is None:
        raise ExportError(f"the {fmt} export is built from the ONNX export; export 'onnx' first")
    if spec.needs_calibration and ctx.calibration is None:
        raise ExportError(f"{fmt} needs calibration images; pass --data (or export from a checkpoint that names "
                          "its data set)")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx.notes = []
    path = EXPORTERS.get(fmt)(model, out_dir / f"{stem}{spec.suffix}", ctx)
    if fmt in BASE_FORMATS:
        ctx.onnx_path = path
    tol = tol or default_tolerance(spec.precision)
    loaded = load_runtime(spec.runtime, path, threads, spec.precision, ctx.input_shape)
    try:
        if boxes:  # detections in, detections out: both sides encoded as detector rows, image by image
            from .detection import detections_as_rows

            ctx.notes.append("the graph holds the detector's own decoding and NMS (outputs boxes, scores, labels); "
                             "parity compares its detections with PyTorch's, image by image"
                             + (" (OpenVINO compiled with INFERENCE_PRECISION_HINT f32)" if spec.runtime == "openvino"
                                else ""))
            parity = check_parity(model, detections_as_rows(path, threads, int(ctx.input_shape[-1]),
                                                            int(getattr(model.inner, "num_classes", 0))),
                                  x_val, y_val, compare=ctx.compare)
        else:
            parity = check_parity(model, loaded.run, x_val, y_val,
                                  batch_size=ctx.input_shape[0] if spec.needs_gpu else 64, compare=ctx.compare)
    finally:
        loaded.close()
    problems = parity.violations(tol)
    if problems:
        raise ExportError(f"{fmt} export {path} disagrees with the PyTorch model beyond the {spec.precision} "
                          f"tolerance: {'; '.join(problems)}")
    default = None if boxes else _plugin_default_parity(spec, path, model, x_val, y_val, threads, loaded.execution,
                                                        ctx)
    size = sum(p.stat().st_size for p in files_of(path)) / 2**20
    return ExportResult(format=fmt, path=str(path), runtime=spec.runtime, precision=spec.precision,
                        size_mb=round(size, 4), parity=parity, tolerance=tol, notes=list(ctx.notes),
                        execution=loaded.execution, parity_plugin_default=default)


def _plugin_default_parity(spec: ExportFormat, path: Path, model: torch.nn.Module, x_val: Images,
                           y_val: Labels, threads: int, execution: dict[str, str],
                           ctx: ExportContext) -> Parity | None:
    """An FP32 OpenVINO IR is checked with the f32 precision hint; a deployment that sets no hint
    runs the plugin's default (bf16 on CPUs with bf16 units). Where that differs here, the
    agreement under it is measured too, and the note says how to set the hint."""
    if spec.runtime != "openvino" or spec.precision != "fp32":
        return None
    adapter = PROFILERS.get(spec.runtime)
    plain = adapter.load_plugin_default(path, threads)  # type: ignore[attr-defined]
    try:
        hint = execution.get("INFERENCE_PRECISION_HINT", "f32")
        default = plain.execution.get("INFERENCE_PRECISION_HINT", hint)
        how = (f"compile with the hint: ov.Core().compile_model('{path.name}', 'CPU', "
               f"{{'INFERENCE_PRECISION_HINT': '{hint}'}}) (benchmark_app: -infer_precision {hint})")
        if default == hint:
            ctx.notes.append(f"parity figures hold for OpenVINO inference precision {hint} (this CPU's default too); "
                             f"to keep it on other CPUs, {how}")
            return None
        other = check_parity(model, plain.run, x_val, y_val, compare=ctx.compare)
    finally:
        plain.close()
    ctx.notes.append(f"parity figures hold for OpenVINO inference precision {hint}; OpenVINO's default here is "
                     f"{default}, with {other.agreement_name} {other.top1_agreement:.4f} and max |diff| "
                     f"{other.max_abs_diff:.2e}: {how}")
    return other


def files_of(path: Path) -> list[Path]:
    """The model file plus its weights file where the format has one (OpenVINO .xml + .bin)."""
    weights = path.with_suffix(".bin")
    return [path, weights] if path.suffix == ".xml" and weights.exists() else [path]

