"""Scene classification: one class per image. The behaviour edgekd had before tasks existed."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..export.parity import Parity, compare_logits
from ..tolerances import ParityTolerance
from . import TASKS


class ClassificationTask:
    """Labels are class indices (N,); logits (N, K); the metric is top-1 accuracy."""

    name = "classification"
    metric = "accuracy"
    kd_terms = frozenset({"response", "feature", "relation", "multi-teacher", "semi-supervised", "robust"})

    def augment(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        from ..distill.trainer import augment

        return augment(x, gen, kinds), y

    def view_labels(self, y: torch.Tensor, view: int) -> torch.Tensor:
        return y  # a dihedral view keeps the scene's class

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def kd_rows(self, student: torch.Tensor, y: torch.Tensor, teachers: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        return student, y, teachers

    def evaluate(self, logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                 alpha: float = 0.5, temperature: float = 4.0) -> dict[str, float]:
        from ..distill.trainer import evaluate

        return evaluate(logits, y, teacher_logits, alpha, temperature)

    def compare(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> Parity:
        return compare_logits(ref, got, labels)

    def tolerances(self, configured: dict[str, ParityTolerance]) -> dict[str, ParityTolerance]:
        return configured


TASKS.register("classification")(ClassificationTask())
