"""Parity of an exported model with the PyTorch model it came from (pure comparison)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel


class ParityTolerance(BaseModel):
    max_abs_diff: float | None = 1e-3  # None: not checked (quantized formats)
    min_top1_agreement: float = 0.99
    max_accuracy_drop: float | None = None  # in accuracy units (0.01 = 1 point)


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


class Parity(BaseModel):
    n: int
    top1_agreement: float
    accuracy_torch: float
    accuracy_export: float
    accuracy_delta: float  # export minus torch
    max_abs_diff: float
    mean_abs_diff: float

    def violations(self, tol: ParityTolerance) -> list[str]:
        out = []
        if tol.max_abs_diff is not None and self.max_abs_diff > tol.max_abs_diff:
            out.append(f"max |logit difference| {self.max_abs_diff:.3g} > tolerance {tol.max_abs_diff:.3g}")
        if self.top1_agreement < tol.min_top1_agreement:
            out.append(f"top-1 agreement {self.top1_agreement:.4f} < required {tol.min_top1_agreement:.4f}")
        if tol.max_accuracy_drop is not None and -self.accuracy_delta > tol.max_accuracy_drop:
            out.append(f"accuracy drop {-self.accuracy_delta:.4f} > allowed {tol.max_accuracy_drop:.4f}")
        return out


def compare_logits(ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> Parity:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    acc_ref = float((ref.argmax(1) == labels).mean())
    acc_got = float((got.argmax(1) == labels).mean())
    return Parity(
        n=int(len(labels)), top1_agreement=float((ref.argmax(1) == got.argmax(1)).mean()),
        accuracy_torch=acc_ref, accuracy_export=acc_got, accuracy_delta=acc_got - acc_ref,
        max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
    )


@torch.no_grad()
def check_parity(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray],
                 x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> Parity:
    model.eval()
    ref, got = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        ref.append(model(xb).numpy())
        got.append(np.asarray(run(xb.numpy()), dtype=np.float32))
    return compare_logits(np.concatenate(ref), np.concatenate(got), y.numpy())
