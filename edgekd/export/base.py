"""The format table and the export-then-verify step shared by every format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel

from ..errors import ExportError
from ..profilers import load_runtime
from ..registry import Registry
from .parity import Parity, ParityTolerance, check_parity


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    runtime: str  # the runtime that loads it for parity and profiling
    precision: str
    needs_gpu: bool = False


# One table lists every format; exporters and the benchmark walk it (the Ultralytics idea).
FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in [
        ExportFormat("onnx", ".onnx", "onnxruntime", "fp32"),
        ExportFormat("openvino", ".xml", "openvino", "fp32"),
    ]
}


@dataclass
class ExportContext:
    """What an exporter may need besides the model: metadata and the ONNX file it builds on."""

    input_shape: list[int]
    metadata: dict[str, str]
    onnx_path: Path | None = None


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


def export_model(fmt: str, model: torch.nn.Module, out_dir: Path, stem: str, ctx: ExportContext,
                 x_val: torch.Tensor, y_val: torch.Tensor, tol: ParityTolerance, threads: int = 1) -> ExportResult:
    """Export `model` to `fmt`, then check its outputs against PyTorch on the validation split;
    an export beyond `tol` raises ExportError naming the format and the figures."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ExportError(f"unknown export format {fmt!r}; choose from: {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = EXPORTERS.get(fmt)(model, out_dir / f"{stem}{spec.suffix}", ctx)
    if fmt == "onnx":
        ctx.onnx_path = path
    loaded = load_runtime(spec.runtime, path, threads, "fp32", ctx.input_shape)
    try:
        parity = check_parity(model, loaded.run, x_val, y_val)
    finally:
        loaded.close()
    problems = parity.violations(tol)
    if problems:
        raise ExportError(f"{fmt} export {path} disagrees with the PyTorch model: {'; '.join(problems)}")
    size = sum(p.stat().st_size for p in _files_of(path)) / 2**20
    return ExportResult(format=fmt, path=str(path), runtime=spec.runtime, precision=spec.precision,
                        size_mb=round(size, 4), parity=parity)


def _files_of(path: Path) -> list[Path]:
    """The model file plus its weights file where the format has one (OpenVINO .xml + .bin)."""
    weights = path.with_suffix(".bin")
    return [path, weights] if path.suffix == ".xml" and weights.exists() else [path]


def _first_line(exc: BaseException) -> Any:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
