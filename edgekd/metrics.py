"""Per-class figures on a labelled split. A classifier: precision, recall, F1 and support per
class, accuracy, balanced accuracy (the mean recall) and the confusion matrix (rows: true class,
columns: predicted class). A segmenter: IoU per class and mIoU. Pure arithmetic on labels,
checked against hand-computed values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel


class ClassFigures(BaseModel):
    name: str
    precision: float | None  # None: the class was never predicted
    recall: float | None  # None: the split holds no image of the class
    f1: float | None
    support: int


class ClassMetrics(BaseModel):
    split: str  # "validation" or "test"
    n: int
    accuracy: float
    balanced_accuracy: float  # mean recall over the classes present in the split
    macro_f1: float  # mean F1 over the classes present in the split
    classes: list[ClassFigures]
    confusion: list[list[int]]


def class_metrics(pred: Sequence[int] | np.ndarray, truth: Sequence[int] | np.ndarray, classes: list[str],
                  split: str = "validation") -> ClassMetrics:
    p, t = np.asarray(pred, dtype=np.int64), np.asarray(truth, dtype=np.int64)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    figures = []
    for i, name in enumerate(classes):
        hit, support, predicted = int(confusion[i, i]), int(confusion[i].sum()), int(confusion[:, i].sum())
        prec = hit / predicted if predicted else None
        rec = hit / support if support else None
        f1 = (2 * prec * rec / (prec + rec) if prec and rec else 0.0) if prec is not None and rec is not None else (
            0.0 if rec is not None else None)
        figures.append(ClassFigures(name=name, precision=prec, recall=rec, f1=f1, support=support))
    present = [f for f in figures if f.recall is not None]
    return ClassMetrics(split=split, n=int(len(t)), accuracy=float((p == t).mean()) if len(t) else 0.0,
                        balanced_accuracy=float(np.mean([f.recall for f in present])) if present else 0.0,
                        macro_f1=float(np.mean([f.f1 or 0.0 for f in present])) if present else 0.0,
                        classes=figures, confusion=confusion.tolist())


class ClassIoU(BaseModel):
    name: str
    iou: float | None  # None: the class is in no ground-truth pixel of the split
    pixels: int  # ground-truth pixels of the class


class SegmentationMetrics(BaseModel):
    """A segmenter on a labelled split: mIoU over the classes present, per-class IoU, pixel
    accuracy and the confusion matrix (rows: true class, columns: predicted)."""

    split: str
    n: int  # tiles
    miou: float
    pixel_accuracy: float
    classes: list[ClassIoU]
    confusion: list[list[int]]


def metrics_from_confusion(cm: Any, classes: list[str], split: str, n: int
                           ) -> SegmentationMetrics:
    m = np.asarray(cm, dtype=np.int64)
    tp = np.diag(m)
    support, predicted = m.sum(1), m.sum(0)
    union = support + predicted - tp
    per = [ClassIoU(name=c, iou=float(tp[i] / union[i]) if support[i] > 0 else None, pixels=int(support[i]))
           for i, c in enumerate(classes)]
    present = [p.iou for p in per if p.iou is not None]
    total = int(m.sum())
    return SegmentationMetrics(split=split, n=n, miou=float(np.mean(present)) if present else 0.0,
                               pixel_accuracy=float(tp.sum() / total) if total else 0.0, classes=per,
                               confusion=m.tolist())
