"""How closely an export must agree with the PyTorch model, per precision: a leaf record read
by the configuration and by the parity check (edgekd.export.parity)."""

from __future__ import annotations

from pydantic import BaseModel


class ParityTolerance(BaseModel):
    max_abs_diff: float | None = 1e-3  # None: not checked (quantized formats)
    min_top1_agreement: float = 0.99
    max_accuracy_drop: float | None = None  # in accuracy units (0.01 = 1 point)
    # on a small split one image is a large share: this many flipped images never fail the
    # agreement or accuracy limits by themselves (the logit limit still applies)
    flip_images: int = 1


# per precision: FP32 must match to rounding; FP16 to half precision; INT8 is judged by agreement
# and accuracy, since its logits differ by design
DEFAULT_TOLERANCES = {
    "fp32": ParityTolerance(max_abs_diff=1e-3, min_top1_agreement=0.99),
    # FP16 files may run in bf16 (CPUs with AMX): 8 mantissa bits, |Δlogit| up to a few tenths
    "fp16": ParityTolerance(max_abs_diff=0.5, min_top1_agreement=0.97, max_accuracy_drop=0.01),
    "int8": ParityTolerance(max_abs_diff=None, min_top1_agreement=0.85, max_accuracy_drop=0.05),
}


def default_tolerance(precision: str) -> ParityTolerance:
    return DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"]).model_copy()
