"""OpenVINO IR from the ONNX export: FP32, FP16 weights, and INT8 with NNCF post-training
quantization (optionally accuracy-controlled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ExportError
from ..files import first_line
from .base import EXPORTERS, ExportContext


def _convert(ctx: ExportContext):
    import openvino as ov

    try:
        ov_model = ov.convert_model(str(ctx.onnx_path))
    except Exception as exc:  # OpenVINO raises its own exception types
        raise ExportError(f"OpenVINO conversion of {ctx.onnx_path} failed: {first_line(exc, 240)}") from None
    for key, value in ctx.metadata.items():
        ov_model.set_rt_info(value, ["model_info", key])
    return ov_model


def _save(ov_model, path: Path, fp16: bool) -> Path:
    import openvino as ov

    ov.save_model(ov_model, str(path), compress_to_fp16=fp16)
    return path


@EXPORTERS.register("openvino")
def export_openvino(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    ov_model = _convert(ctx)
    # OpenVINO does not apply a precision hint stored in the IR; it is written as information for
    # whoever deploys it (the parity figures hold for it), and the export note says how to set it
    ov_model.set_rt_info("f32", ["model_info", "inference_precision_hint"])
    return _save(ov_model, path, fp16=False)


@EXPORTERS.register("openvino-fp16")
def export_openvino_fp16(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    ctx.notes.append("FP16 weights; the CPU plugin computes in its default inference precision "
                     "(bf16 on CPUs with AMX/avx512_bf16, else f32)")
    return _save(_convert(ctx), path, fp16=True)


@EXPORTERS.register("openvino-int8-qat")
def export_openvino_int8_qat(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    ctx.notes.append("INT8 IR converted from the onnx-int8-qat graph (its quantization kept, no calibration)")
    return _save(_convert(ctx), path, fp16=False)


@EXPORTERS.register("openvino-int8")
def export_openvino_int8(model: torch.nn.Module, path: Path, ctx: ExportContext) -> Path:
    import nncf

    assert ctx.calibration is not None
    calib = nncf.Dataset([ctx.calibration[i:i + 1] for i in range(len(ctx.calibration))])
    ov_model = _convert(ctx)
    try:
        if ctx.max_accuracy_drop is not None and ctx.validation is not None:
            xv, yv = ctx.validation  # images read one at a time: a large split is never one array

            def image(i: int) -> np.ndarray:
                return np.asarray(xv[i:i + 1], dtype=np.float32)

            val = nncf.Dataset(list(range(len(yv))), image)

            def accuracy(compiled, items) -> tuple[float, None]:
                if ctx.metric is not None:  # the task's metric over the items (mIoU for segmentation)
                    items = list(items)
                    logits = np.concatenate([np.asarray(compiled([image(i)])[0]) for i in items])
                    return ctx.metric(logits, np.stack([np.asarray(yv[i]) for i in items])), None
                hits = [int(np.argmax(compiled([image(i)])[0])) == int(yv[i]) for i in items]
                return float(np.mean(hits)), None

            q = nncf.quantize_with_accuracy_control(ov_model, calib, val, accuracy, max_drop=ctx.max_accuracy_drop,
                                                    subset_size=len(ctx.calibration))
            ctx.notes.append(f"NNCF accuracy-controlled quantization, max drop {ctx.max_accuracy_drop:g}")
        else:
            q = nncf.quantize(ov_model, calib, subset_size=len(ctx.calibration))
            ctx.notes.append(f"NNCF post-training quantization on {len(ctx.calibration)} calibration images")
    except ExportError:
        raise
    except Exception as exc:  # NNCF raises its own types
        raise ExportError(f"NNCF INT8 quantization failed: {first_line(exc, 240)}") from None
    return _save(q, path, fp16=False)
