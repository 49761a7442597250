"""The `onnx` export format: the ONNX graph of edgekd.convert.onnx, simplified with onnxslim."""

from __future__ import annotations

from pathlib import Path

import torch

from ..convert.onnx import to_onnx
from .base import EXPORTERS, ExportContext


@EXPORTERS.register("onnx")
def export_onnx(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    return to_onnx(model, path, ctx.input_shape, ctx.metadata, simplify=True)
