"""Parity of an exported model with the PyTorch model it came from (pure comparison)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import BaseModel

from ..data.store import Images
from ..tolerances import DEFAULT_TOLERANCES, ParityTolerance, default_tolerance

__all__ = ["DEFAULT_TOLERANCES", "Parity", "ParityTolerance", "check_parity", "compare_logits", "default_tolerance"]


class Parity(BaseModel):
    n: int
    top1_agreement: float
    accuracy_torch: float
    accuracy_export: float
    accuracy_delta: float  # export minus torch
    max_abs_diff: float
    mean_abs_diff: float
    non_finite: int = 0  # NaN or infinite logits, of either model
    # the task's terms: "accuracy" (top1_agreement per image) or "mIoU" (top1_agreement is the
    # agreement of the argmax maps per pixel, accuracy_* the mIoU of each model)
    metric: str = "accuracy"

    @property
    def agreement_name(self) -> str:
        return "pixel agreement" if self.metric == "mIoU" else "top-1 agreement"

    def violations(self, tol: ParityTolerance) -> list[str]:
        out = []
        if self.non_finite:  # NaN compares false with every tolerance: it must fail by itself
            out.append(f"{self.non_finite} logits are NaN or infinite")
        if tol.max_abs_diff is not None and not self.max_abs_diff <= tol.max_abs_diff:
            out.append(f"max |logit difference| {self.max_abs_diff:.3g} > tolerance {tol.max_abs_diff:.3g}")
        slack = tol.flip_images / self.n if self.n else 0.0  # k images of n, as a share
        need = min(tol.min_top1_agreement, 1.0 - slack) if slack > 0 else tol.min_top1_agreement
        why = (f" (max of the tolerance and {tol.flip_images} of {self.n} images)"
               if need < tol.min_top1_agreement else "")
        if self.top1_agreement < need - 1e-9:
            out.append(f"{self.agreement_name} {self.top1_agreement:.4f} < required {need:.4f}{why}")
        if tol.max_accuracy_drop is not None:
            allowed = max(tol.max_accuracy_drop, slack)
            if -self.accuracy_delta > allowed + 1e-9:
                out.append(f"{self.metric} drop {-self.accuracy_delta:.4f} > allowed {allowed:.4f}"
                           + (f" (max of {tol.max_accuracy_drop:.4f} and {tol.flip_images} of {self.n} images)"
                              if allowed > tol.max_accuracy_drop else ""))
        return out


def compare_logits(ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> Parity:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    non_finite = int((~np.isfinite(ref)).sum() + (~np.isfinite(got)).sum())
    acc_ref = float((ref.argmax(1) == labels).mean())
    acc_got = float((got.argmax(1) == labels).mean())
    return Parity(
        n=int(len(labels)), top1_agreement=float((ref.argmax(1) == got.argmax(1)).mean()),
        accuracy_torch=acc_ref, accuracy_export=acc_got, accuracy_delta=acc_got - acc_ref,
        max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), non_finite=non_finite,
    )


@torch.no_grad()
def check_parity(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray],
                 x: Images, y: torch.Tensor, batch_size: int = 64,
                 compare: Callable[[np.ndarray, np.ndarray, np.ndarray], Parity] | None = None) -> Parity:
    """The export (`run`) against the PyTorch model on (x, y), compared in the task's terms
    (`compare`; default: classification's top-1 agreement and accuracy)."""
    model.eval()
    ref, got = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        ref.append(model(xb).numpy())
        got.append(np.asarray(run(xb.numpy()), dtype=np.float32))
    return (compare or compare_logits)(np.concatenate(ref), np.concatenate(got), y.numpy())
