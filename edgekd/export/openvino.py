"""OpenVINO IR (FP32) converted from the ONNX export."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ExportError
from .base import EXPORTERS, ExportContext, _first_line


@EXPORTERS.register("openvino")
def export_openvino(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    import openvino as ov

    if ctx.onnx_path is None:
        raise ExportError("the openvino export converts the ONNX export; export 'onnx' first")
    try:
        ov_model = ov.convert_model(str(ctx.onnx_path))
        for key, value in ctx.metadata.items():
            ov_model.set_rt_info(value, ["model_info", key])
        ov.save_model(ov_model, str(path), compress_to_fp16=False)
    except Exception as exc:  # OpenVINO raises its own exception types
        raise ExportError(f"OpenVINO conversion of {ctx.onnx_path} failed: {_first_line(exc)}") from None
    return path
