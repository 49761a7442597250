"""Scene classification: one class per image. The behaviour edgekd had before tasks existed."""

from __future__ import annotations

import numpy as np
import torch

from ..agreement import Parity, compare_logits
from ..data.store import Labels
from ..distill.trainer import PerImage
from ..tolerances import ParityTolerance
from . import TASKS


class ClassificationTask(PerImage):
    """Labels are class indices (N,); logits (N, K); the metric is top-1 accuracy. Training's
    label handling is `PerImage`, what the trainer does without a task."""

    name = "classification"
    metric = "accuracy"
    kd_terms = frozenset({"response", "feature", "relation", "multi-teacher", "semi-supervised", "robust"})
    default_kd: tuple[str, ...] = ("response",)

    def evaluate(self, logits: torch.Tensor, y: Labels, teacher_logits: torch.Tensor | None = None,
                 alpha: float = 0.5, temperature: float = 4.0) -> dict[str, float]:
        from ..data.dataset import class_labels
        from ..distill.trainer import evaluate

        return evaluate(logits, class_labels(y), teacher_logits, alpha, temperature)

    def compare(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> Parity:
        return compare_logits(ref, got, labels)

    def tolerances(self, configured: dict[str, ParityTolerance]) -> dict[str, ParityTolerance]:
        return configured


TASKS.register("classification")(ClassificationTask())
