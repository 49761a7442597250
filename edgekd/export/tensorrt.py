"""TensorRT engines (FP16, INT8) built from the ONNX export with the TensorRT Python API.
Engines are specific to the GPU and TensorRT version they were built with, so this exporter
runs on the device itself (by hand, in the Jetson image, or through the agent)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ExportError
from .base import EXPORTERS, ExportContext


def _build(precision: str, path: Path, ctx: ExportContext) -> Path:
    from ..profilers.tensorrt import build_engine, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise ExportError(f"tensorrt-{precision} engines are built on the NVIDIA device they run on, and this machine "
                          f"cannot ({reason}); run `edgekd export` on the board (the Jetson image has TensorRT)")
    assert ctx.onnx_path is not None
    engine, notes = build_engine(ctx.onnx_path, ctx.input_shape, precision, calib_data=ctx.calibration,
                                 cache_dir=path.parent / ".edgekd-trt")
    path.write_bytes(engine)
    ctx.notes.extend(notes)
    return path


@EXPORTERS.register("tensorrt-fp16")
def export_tensorrt_fp16(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    return _build("fp16", path, ctx)


@EXPORTERS.register("tensorrt-int8")
def export_tensorrt_int8(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    return _build("int8", path, ctx)
