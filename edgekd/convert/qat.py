"""Quantization-aware training (QAT) with NNCF: a student's BatchNorms folded into its
convolutions, fake quantization inserted (NNCF's PyTorch backend, initialised from calibration
images), fine-tuned by the caller while still distilled from the teacher, then exported as an
INT8 QDQ ONNX graph whose outputs are the fake-quantized model's own.

BatchNorm is folded first because a BatchNorm between a fake-quantized convolution and the next
quantizer stays a float operator in the exported graph (ONNX Runtime ran such a student 2-3x
slower than the same student folded). The folding is checked: the folded model must give the
unfolded model's outputs, or nothing is folded."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExportError
from ..files import first_line
from .onnx import to_onnx

QAT_FORMAT = "edgekd-qat/1"


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of `model` with every BatchNorm2d that directly follows a Conv2d (registered next to
    each other: nn.Sequential, timm's ConvNormAct and block attributes) folded into the
    convolution, and how many were folded. A BatchNorm that carries an activation (timm's
    BatchNormAct2d) leaves the activation in its place. When the folded model's outputs differ
    from the original's (a registration order that is not the data flow), the copy is returned
    unfolded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    original = copy.deepcopy(model).eval()
    folded = copy.deepcopy(model).eval()
    n = 0
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.num_features == conv.out_channels):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                rest = list(bn.children())  # BatchNormAct2d: its dropout and activation
                setattr(parent, bn_name, nn.Sequential(*rest) if rest else nn.Identity())
                n += 1
    if n:
        with torch.no_grad():
            ref, out = original(example), folded(example)
        if not torch.allclose(ref, out, rtol=1e-3, atol=1e-4 * max(1.0, float(ref.abs().max()))):
            return original, 0
    return folded, n


NNCF_COMPILE_S = "900"  # NNCF compiles its CPU extension on first use: minutes on a busy or small board


def _quiet_nncf() -> None:
    """NNCF's info lines and the notices torch logs when NNCF loads its extension stay out of
    edgekd's console; the extension's compilation is given NNCF_COMPILE_S, not NNCF's 60 s, unless
    NNCF_EXTENSION_LOAD_TIMEOUT says otherwise (on a busy 2-core machine it took over 60 s)."""
    import os

    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", NNCF_COMPILE_S)
    for name in ("nncf", "torch.utils.cpp_extension", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def insert_fake_quant(model: nn.Module, calibration: torch.Tensor, batch_size: int = 32,
                      symmetric: bool = False) -> nn.Module:
    """NNCF's quantizers inserted into `model` (weights per channel; activations asymmetric, the
    MIXED preset, which maps to ONNX Runtime's U8S8 QDQ form, or symmetric for TensorRT, whose
    explicit quantization wants zero points of 0), their ranges set from `calibration` images;
    the returned model trains like any PyTorch model."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    _quiet_nncf()
    batches = [calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)]
    model.eval()
    # one scale per activation tensor: NNCF's default gives a depthwise convolution's input one
    # per channel, which ONNX Runtime cannot run as QLinearConv (those convolutions stayed float,
    # and the student ran 2.3x slower than with per-tensor scales, measured side by side)
    per_tensor = AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(per_channel=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED
        return nncf.quantize(model, nncf.Dataset(batches), preset=preset, subset_size=len(calibration),
                             fast_bias_correction=True, advanced_parameters=per_tensor)


def prepare_qat(model: nn.Module, calibration: torch.Tensor, symmetric: bool = False) -> tuple[nn.Module, int]:
    """(the fake-quantized copy of `model` to fine-tune, how many BatchNorms were folded)."""
    folded, n = fold_batchnorm(model, calibration[:8])
    return insert_fake_quant(folded, calibration, symmetric=symmetric), n


def is_fake_quantized(model: nn.Module) -> bool:
    """Whether NNCF's quantizers were inserted into `model` (prepare_qat, load_qat)."""
    from nncf.torch.function_hook.wrapper import is_wrapped

    return is_wrapped(model)


def strip_fake_quant(qmodel: nn.Module, input_shape: list[int]) -> nn.Module:
    """The fake-quantized model with NNCF's hooks replaced by PyTorch's fake-quantize operators
    (exported to ONNX as QuantizeLinear/DequantizeLinear pairs), outputs unchanged; a copy."""
    import nncf

    _quiet_nncf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stripped = nncf.strip(qmodel, do_copy=True, strip_format=nncf.StripFormat.NATIVE,
                              example_input=torch.zeros(input_shape))
    return stripped.eval()


def qat_to_onnx(qmodel: nn.Module, path: Path, input_shape: list[int],
                metadata: dict[str, str] | None = None) -> Path:
    """The fake-quantized model as an INT8 QDQ ONNX graph."""
    from .qdq import has_qdq

    to_onnx(strip_fake_quant(qmodel, input_shape), path, input_shape, metadata)
    import onnx

    if not has_qdq(onnx.load(str(path), load_external_data=False)):
        raise ExportError(f"{path}: the quantization-aware model exported without quantize/dequantize operators")
    return path


def save_qat(path: Path, qmodel: nn.Module, meta: dict[str, Any]) -> None:
    """NNCF's description of the inserted quantizers with the weights: `load_qat` rebuilds the
    fake-quantized model from the student's structure."""
    import io

    import nncf.torch

    from ..files import atomic_write

    buf = io.BytesIO()
    torch.save({"format": QAT_FORMAT, "nncf_config": nncf.torch.get_config(qmodel),
                "state_dict": qmodel.state_dict(), **meta}, buf)
    atomic_write(path, buf.getvalue())


def load_qat(path: Path, bare: nn.Module, input_shape: list[int]) -> nn.Module:
    """The fake-quantized model saved at `path`, rebuilt on `bare` (the student's structure,
    any weights)."""
    import nncf.torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ExportError(f"cannot read the quantization-aware checkpoint {path}: {first_line(exc)}") from None
    if not isinstance(saved, dict) or saved.get("format") != QAT_FORMAT:
        raise ExportError(f"{path} is not an edgekd quantization-aware checkpoint ({QAT_FORMAT})")
    example = torch.zeros(input_shape)
    folded, _ = fold_batchnorm(bare, example)
    _quiet_nncf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = nncf.torch.load_from_config(folded, saved["nncf_config"])
    qmodel.load_state_dict(saved["state_dict"])
    return qmodel.eval()
