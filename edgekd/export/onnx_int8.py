"""The `onnx-int8` export format: static QDQ quantization (edgekd.convert.qdq) calibrated on
training images."""

from __future__ import annotations

from pathlib import Path

import torch

from ..convert.qdq import calibration_batches, quantize_qdq
from .base import EXPORTERS, ExportContext


@EXPORTERS.register("onnx-int8")
def export_onnx_int8(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    assert ctx.onnx_path is not None and ctx.calibration is not None
    batches = calibration_batches(ctx.calibration, [1, *ctx.input_shape[1:]], n=len(ctx.calibration))
    quantize_qdq(ctx.onnx_path, path, batches)
    ctx.notes.append(f"static QDQ quantization (U8S8, per-channel weights) calibrated on {len(batches)} images")
    return path
