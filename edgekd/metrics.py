"""Per-class figures of a classifier on a labelled split: precision, recall, F1 and support per
class, accuracy, balanced accuracy (the mean recall) and the confusion matrix (rows: true class,
columns: predicted class). Pure arithmetic on labels, checked against hand-computed values."""

from __future__ import annotations

from collections.abc import Sequence

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
