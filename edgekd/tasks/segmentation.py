"""Semantic segmentation: a class per pixel (land cover, buildings, roads, water).

Labels are masks (N, H, W) of class indices, `ignore_index` for pixels without a label; logits
are dense (N, K, h, w) at the model's output stride and are upsampled (bilinear) to the mask's
size for the loss, the KD terms and the metric. Per-sample KD terms see one row per valid pixel,
so `alpha * CE + (1 - alpha) * tau^2 * KL` is averaged over valid pixels, ignore pixels left out.

The metric is mIoU over the classes present in the ground truth (per-class IoU = TP / (TP + FP +
FN) from the confusion matrix, computed by torchmetrics), with pixel accuracy beside it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..agreement import Parity
from ..data.store import Labels
from ..metrics import SegmentationMetrics, metrics_from_confusion
from ..tolerances import ParityTolerance
from . import TASKS

# a lower precision passes parity only within 1 mIoU point of PyTorch (configurable: parity.int8 / fp16)
DENSE_MAX_DROP = 0.01


def upsample(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Dense logits at `size` (bilinear); as they are when already there."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def confusion(pred: torch.Tensor, truth: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Confusion matrix (rows: true class, columns: predicted), ignore pixels left out."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(pred.reshape(-1), truth.reshape(-1).long(), num_classes,
                                       ignore_index=ignore_index, normalize=None, validate_args=False)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


class SegmentationTask:
    name = "segmentation"
    metric = "mIoU"
    kd_terms = frozenset({"response", "feature", "multi-teacher", "robust", "cwd"})
    # per-pixel response KD alone did not beat cross-entropy on the Dubai tiles (3 students, 3 seeds);
    # with CWD at the paper's weight (3, tau 4) EdgeNet-Seg w1-d2 gained +1.9 mIoU points
    # (benchmarks/results/segmentation*.md)
    default_kd: tuple[str, ...] = ("response", "cwd:3")

    def __init__(self, ignore_index: int = 255):
        self.ignore_index = ignore_index

    def augment(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """flip, rot90 and crop applied to each image and its mask alike (the mask resized nearest)."""
        from ..distill.trainer import augment_with_masks

        x, masks = augment_with_masks(x, y, gen, kinds)
        assert masks is not None
        return x, masks

    def view_labels(self, y: torch.Tensor, view: int) -> torch.Tensor:
        from ..distill.teacher import apply_view

        return apply_view(y, view)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(upsample(logits, y.shape[-2:]), y.long(), ignore_index=self.ignore_index)

    def kd_rows(self, student: torch.Tensor, y: torch.Tensor, teachers: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        size = y.shape[-2:]
        valid = (y != self.ignore_index).reshape(-1)
        rows = _rows(upsample(student, size))[valid]
        return rows, y.reshape(-1)[valid].long(), [_rows(upsample(t, size))[valid] for t in teachers]

    @torch.no_grad()
    def evaluate(self, logits: torch.Tensor, y: Labels, teacher_logits: torch.Tensor | None = None,
                 alpha: float = 0.5, temperature: float = 4.0) -> dict[str, float]:
        """mIoU (as "accuracy": the task's metric), pixel accuracy, cross-entropy and KD loss per
        valid pixel, in chunks (upsampled logits of a whole split are never held at once)."""
        from ..distill.losses import response_kd_loss

        k = logits.shape[1]
        cm = torch.zeros(k, k, dtype=torch.long)
        ce = kd = 0.0
        valid = 0
        for i, yb, up in _chunks(logits, y):
            cm += confusion(up.argmax(1), yb, k, self.ignore_index)
            n = int((yb != self.ignore_index).sum())
            if n == 0:
                continue
            ce += float(F.cross_entropy(up, yb, ignore_index=self.ignore_index, reduction="sum"))
            if teacher_logits is not None:
                s, lab, (t,) = self.kd_rows(logits[i:i + 16], yb, [teacher_logits[i:i + 16]])
                kd += float(response_kd_loss(s, t, lab, alpha=alpha, temperature=temperature)) * n
            valid += n
        m = metrics_from_confusion(cm, [str(c) for c in range(k)], "validation", len(y))
        out = {"accuracy": m.miou, "miou": m.miou, "pixel_accuracy": m.pixel_accuracy,
               "cross_entropy": ce / max(valid, 1)}
        if teacher_logits is not None:
            out["kd_loss"] = kd / max(valid, 1)
        return out

    def compare(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> Parity:
        """Pixel agreement of the argmax maps (as top1_agreement), mIoU of each (as accuracy),
        and the logits' differences."""
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        non_finite = int((~np.isfinite(ref)).sum() + (~np.isfinite(got)).sum())
        r, g, y = torch.from_numpy(np.nan_to_num(ref)), torch.from_numpy(np.nan_to_num(got)), torch.from_numpy(labels)
        miou_ref, miou_got = self.evaluate(r, y)["miou"], self.evaluate(g, y)["miou"]
        return Parity(n=int(len(labels)), top1_agreement=float((ref.argmax(1) == got.argmax(1)).mean()),
                      accuracy_torch=miou_ref, accuracy_export=miou_got, accuracy_delta=miou_got - miou_ref,
                      max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), non_finite=non_finite,
                      metric="mIoU")

    def tolerances(self, configured: dict[str, ParityTolerance]) -> dict[str, ParityTolerance]:
        """Lower precisions within 1 mIoU point unless the configuration says otherwise."""
        from ..tolerances import DEFAULT_TOLERANCES

        out = dict(configured)
        for precision in ("fp16", "int8"):
            tol = out.get(precision)
            if tol is not None and tol == DEFAULT_TOLERANCES[precision]:  # not configured: the dense default
                out[precision] = tol.model_copy(update={"max_accuracy_drop": DENSE_MAX_DROP})
        return out


def segmentation_metrics(logits: torch.Tensor, y: Labels, classes: list[str], ignore_index: int,
                         split: str) -> SegmentationMetrics:
    """The report's per-class figures of dense logits on a split."""
    k = len(classes)
    cm = torch.zeros(k, k, dtype=torch.long)
    for _, yb, up in _chunks(logits, y):
        cm += confusion(up.argmax(1), yb, k, ignore_index)
    return metrics_from_confusion(cm, classes, split, len(y))


def _chunks(logits: torch.Tensor, y: Labels, size: int = 16) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(start, masks as int64, logits upsampled to them) in chunks: a split's upsampled logits are
    never held at once."""
    for i in range(0, len(y), size):
        yb = y[i:i + size].long()
        yield i, yb, upsample(logits[i:i + size], yb.shape[-2:])


TASKS.register("segmentation")(SegmentationTask())
