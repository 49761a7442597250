"""How an exported model's outputs agree with the PyTorch model's: the `Parity` record and the
classification comparison (a leaf: tasks, the exporters and the device check all read it)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from .tolerances import ParityTolerance


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
    # agreement of the argmax maps per pixel, accuracy_* the mIoU of each model) or "mAP50"
    # (top1_agreement: the share of PyTorch's detections the export finds, accuracy_* mAP50)
    metric: str = "accuracy"

    @property
    def agreement_name(self) -> str:
        if self.metric == "mAP50":
            return "matched-box agreement"
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
