"""The task seam: what differs between classification and segmentation (and, next, detection),
so that the loop -- plan, teacher, teacher cache, search, measurement, J, selection, export,
report -- stays one loop.

A `Task` owns what a label is and how it moves with its image (augmentations, the teacher's
cached views), the loss of a labelled batch, how the KD terms see a batch (per image, or per
valid pixel), the metric (accuracy, mIoU), what export parity compares, and which KD terms
apply. A `Dataset` names its task (`Dataset.task`); `task_of(ds)` gives the object.

`--task` is explicit or read from the data's layout (`detect_task`): class folders are
classification, `images/` + `masks/` segmentation, a COCO json or YOLO `labels/` detection."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import Registry

if TYPE_CHECKING:
    from ..agreement import Parity
    from ..data import Dataset
    from ..data.store import Labels
    from ..tolerances import ParityTolerance

TASK_NAMES = ("classification", "segmentation", "detection")


class Task(Protocol):
    """What the loop asks of a task. Labels `y` are a batch's class indices (N,) or masks (N, H, W);
    logits are (N, K) or dense (N, K, h, w) at the model's output stride."""

    name: str
    metric: str  # the figure validation, selection and parity report: "accuracy" or "mIoU"
    kd_terms: frozenset[str]  # the KD terms that apply to its outputs
    default_kd: tuple[str, ...]  # --kd when the user names none

    def augment(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels transformed together (flip, rot90, crop)."""
        ...

    def view_labels(self, y: torch.Tensor, view: int) -> torch.Tensor:
        """The labels of a batch seen in the dihedral view `view` (what the teacher cache holds)."""
        ...

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of a labelled batch (a teacher's training, a student without KD)."""
        ...

    def kd_rows(self, student: torch.Tensor, y: torch.Tensor, teachers: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(student logits, labels, teacher logits) as rows the per-sample KD terms average over:
        images, or valid pixels at the mask's size."""
        ...

    def evaluate(self, logits: torch.Tensor, y: Labels, teacher_logits: torch.Tensor | None = None,
                 alpha: float = 0.5, temperature: float = 4.0) -> dict[str, float]:
        """"accuracy" (the task's metric: top-1 or mIoU), "cross_entropy", and with teacher logits "kd_loss"."""
        ...

    def compare(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> Parity:
        """An export's outputs against PyTorch's, in the task's terms."""
        ...

    def tolerances(self, configured: dict[str, ParityTolerance]) -> dict[str, ParityTolerance]:
        """Parity tolerances per precision for this task (the configured ones, completed)."""
        ...


TASKS: Registry[Task] = Registry("task")


def task_of(ds: Dataset) -> Task:
    """The task of a data set (a segmentation task with the data's ignore index)."""
    task = get_task(ds.task)
    if ds.ignore_index is not None and getattr(task, "ignore_index", ds.ignore_index) != ds.ignore_index:
        task = type(task)(ds.ignore_index)  # type: ignore[call-arg]
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:  # registered on first use: importing a task imports its models
        from . import classification, detection, segmentation  # noqa: F401
    return TASKS.get(name)


def detect_task(data: Path | None) -> str:
    """The task of a data folder's layout: class folders -> classification; images/ + masks/ ->
    segmentation; a COCO json (annotations.json) or YOLO labels/ -> detection. The demo set is
    classification unless --task says otherwise."""
    if data is None:
        return "classification"
    root = Path(data)
    if not root.is_dir():
        return "classification"  # the loader names the problem
    from ..data.boxes import detection_format
    from ..data.masks import is_mask_folder

    boxes = detection_format(root)  # both formats at once: refused, naming them
    if boxes is not None and is_mask_folder(root):
        raise DataError(f"{root} holds masks/ (segmentation) and {boxes.upper()} boxes (detection); pass --task to say "
                        "which to read")
    if boxes is not None:
        return "detection"
    if is_mask_folder(root):
        return "segmentation"
    if (root / "images").is_dir():
        raise DataError(f"{root} has images/ but no masks/, annotations.json or labels/: for segmentation add masks/ "
                        "with a mask of the same name per image; for detection annotations.json (COCO) or labels/ "
                        "(YOLO); for classification lay out one folder per class; or pass --task")
    return "classification"  # class folders (an empty or odd folder: the loader names the fix)


def resolve_task(task: str | None, data: Path | None) -> str:
    """--task as given (checked), or read from the data's layout."""
    if task is None or task == "auto":
        return detect_task(data)
    if task not in TASK_NAMES:
        from ..registry import close_matches

        raise ConfigError(f"unknown --task {task!r}; {close_matches(task, TASK_NAMES)}choose one of "
                          f"{', '.join(TASK_NAMES)} (or leave it out: the data's layout decides)")
    if task == "classification" and data is not None:
        from ..data.masks import is_mask_folder

        if is_mask_folder(Path(data)):
            raise ConfigError(f"{data} holds images/ + masks/, a segmentation data set, not class folders; pass --task "
                              "segmentation (or leave --task out)")
    return task
