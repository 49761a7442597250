"""The `onnx-int8` export format: static QDQ quantization (edgekd.convert.qdq) calibrated on
training images; and `onnx-int8-qat`: the QDQ graph of a quantization-aware trained student
(edgekd.convert.qat), whose quantization ranges were learned in training."""

from __future__ import annotations

from pathlib import Path

import torch

from ..convert.qdq import calibration_batches, quantize_qdq
from ..errors import ExportError
from .base import EXPORTERS, ExportContext


@EXPORTERS.register("onnx-int8")
def export_onnx_int8(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    assert ctx.onnx_path is not None and ctx.calibration is not None
    batches = calibration_batches(ctx.calibration, [1, *ctx.input_shape[1:]], n=len(ctx.calibration))
    quantize_qdq(ctx.onnx_path, path, batches)
    ctx.notes.append(f"static QDQ quantization (U8S8, per-channel weights) calibrated on {len(batches)} images")
    return path


@EXPORTERS.register("onnx-int8-qat")
def export_onnx_int8_qat(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    from ..convert.qat import is_fake_quantized, qat_to_onnx

    if not is_fake_quantized(model):
        raise ExportError("onnx-int8-qat exports a quantization-aware trained student (fake quantization inserted); "
                          "this model has none: search with --precisions fp32,int8-qat, or export onnx-int8")
    qat_to_onnx(model, path, ctx.input_shape, ctx.metadata)
    ctx.notes.append("INT8 QDQ graph of the quantization-aware trained student: scales and zero points learned in "
                     "training, no post-training calibration")
    return path
