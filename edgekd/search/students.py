"""How the search builds, trains and validates a student: the `StudentTrainer` contract the
engine relies on, and `KDTrainer`, its implementation with edgekd's KD losses. Tests give the
engine a fake trainer instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from ..data import Dataset
from ..distill.losses import KDSettings
from ..distill.teacher import TeacherSource
from ..distill.trainer import Shard, Unlabeled, predict_logits, steps, train
from ..models.arch import StudentSpec
from ..models.sources import build_student
from ..tasks import Task, task_of


def qat_paths(onnx_path: Path) -> tuple[Path, Path]:
    """(the INT8 ONNX graph, the fake-quantized PyTorch model) of a student's quantization-aware
    version, next to its float ONNX export `rungN.onnx`."""
    return onnx_path.with_suffix(".int8-qat.onnx"), onnx_path.with_suffix(".qat.pt")


class Validation(BaseModel):
    """A student on the validation split."""

    accuracy: float
    kd_loss: float
    cross_entropy: float


class StudentTrainer(Protocol):
    qat_epochs: int

    """What the search asks of training. `build` returns a student of `spec` to train and how it
    starts (from scratch, or pretrained weights and where they came from); `bare` its structure
    only (screening and counting: the weights do not matter);
    `train` continues `model` for `epochs` epochs in place (calling `on_step` after each
    optimiser step and `on_epoch(epoch, loss)` after each epoch) and returns the loss of each
    epoch; `validate` scores the model at `precision` — for int8 it quantizes `onnx_path` next
    to it and validates that file; for int8-qat `onnx_path` is the quantization-aware export
    and is validated as it is — and returns the figures and the ONNX file that the measurement
    must use. `quantization_aware` fine-tunes a fake-quantized copy of the trained `model` with
    the same KD terms and writes it next to `onnx_path` as an INT8 ONNX graph (and the
    fake-quantized model beside it); it returns that graph and the loss per epoch."""

    def build(self, spec: StudentSpec) -> tuple[nn.Module, str]: ...

    def bare(self, spec: StudentSpec) -> nn.Module: ...

    def steps(self, epochs: int) -> int: ...

    def train(self, model: nn.Module, epochs: int, seed: int, on_step: Callable[[], None],
              on_epoch: Callable[[int, float], None], shard: Shard | None = None) -> list[float]: ...

    def validate(self, model: nn.Module, onnx_path: Path, precision: str) -> tuple[Validation, Path]: ...

    def quantization_aware(self, model: nn.Module, onnx_path: Path, seed: int, on_step: Callable[[], None],
                           on_epoch: Callable[[int, float], None]) -> tuple[Path, list[float]]: ...


@dataclass
class KDTrainer:
    """Students distilled from the cached teacher outputs with the run's KD terms."""

    ds: Dataset
    mean: list[float]
    std: list[float]
    teacher: TeacherSource
    teacher_channels: list[int]
    t_val: torch.Tensor
    terms: list[tuple[str, float]]
    kd: KDSettings
    batch_size: int
    lr: float
    feature_pairs: list[tuple[int, int]] | None = None
    student_modules: list[str] | None = None  # feature_pairs by module name: the student's side
    teacher_modules: list[str] | None = None  # ... and the teacher's (a student cut from it taps the same names)
    unlabeled: Unlabeled | None = None
    calibration_size: int = 300
    seed: int = 0
    threads: int = 1
    symmetric_int8: bool = False  # TensorRT wants symmetric activations
    qat_epochs: int = 2  # quantization-aware fine-tuning after the float training, at lr / 10
    weights_dir: Path | None = None  # --student-weights-dir: NAME.safetensors / .pth / .pt per timm student
    cut_from: nn.Module | None = None  # the teacher from-teacher students are cut from (None: none searched)
    det_head: str = "fcos"  # detection: the students' box head (--det-head)
    _calib: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def task(self) -> Task:
        return task_of(self.ds)

    def build(self, spec: StudentSpec) -> tuple[nn.Module, str]:
        return build_student(spec, self.ds.in_channels, len(self.ds.classes), self.mean, self.std,
                             weights_dir=self.weights_dir, task=self.ds.task, teacher=self.cut_from,
                             calib=self._cut_batch() if self.cut_from is not None else None, det_head=self.det_head,
                             image_size=self.ds.image_size)

    def bare(self, spec: StudentSpec) -> nn.Module:
        return build_student(spec, self.ds.in_channels, len(self.ds.classes), self.mean, self.std, pretrained=False,
                             task=self.ds.task, teacher=self.cut_from, det_head=self.det_head,
                             image_size=self.ds.image_size)[0]

    def _cut_batch(self, n: int = 64) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """The training images a cut from the teacher ranks its channels on, and the task's loss
        of a model's outputs on them (their labels: classes or masks)."""
        take = np.random.default_rng(self.seed).permutation(len(self.ds.y_train))[:n]
        take.sort()
        x = torch.as_tensor(np.asarray(self.ds.x_train[take]), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(self.ds.y_train[take]))
        y = y if y.is_floating_point() else y.long()  # boxes stay in pixels; classes and masks as indices
        task = self.task
        return x, lambda logits: task.loss(logits, y)

    def _taps(self, model: nn.Module) -> list[str] | None:
        """The named modules whose outputs are `model`'s feature maps: a student cut from the
        teacher holds a copy of it as `inner`, so it taps the teacher's names there."""
        if self.teacher_modules and getattr(model, "source", {}).get("kind") == "from-teacher":
            return [f"inner.{n}" for n in self.teacher_modules]
        return self.student_modules

    def steps(self, epochs: int) -> int:
        return steps(len(self.ds.y_train), self.batch_size, epochs)

    def train(self, model: nn.Module, epochs: int, seed: int, on_step: Callable[[], None],
              on_epoch: Callable[[int, float], None], shard: Shard | None = None) -> list[float]:
        hist = train(model, self.ds.x_train, self.ds.y_train, epochs=epochs, batch_size=self.batch_size, lr=self.lr,
                     seed=seed, teacher=self.teacher, terms=self.terms, kd=self.kd,
                     teacher_channels=self.teacher_channels, pairs=self.feature_pairs,
                     student_modules=self._taps(model), unlabeled=self.unlabeled,
                     on_step=on_step, on_epoch=on_epoch, shard=shard, task=self.task)
        return hist.epoch_loss

    def validate(self, model: nn.Module, onnx_path: Path, precision: str) -> tuple[Validation, Path]:
        if precision == "int8-qat":
            from ..profilers.runner import onnx_logits

            logits = onnx_logits(onnx_path, self.ds.x_val, self.threads)
        elif precision == "int8":
            from ..convert.qdq import quantize_qdq
            from ..profilers.runner import onnx_logits

            onnx_path = quantize_qdq(onnx_path, onnx_path.with_suffix(".int8.onnx"), self._calibration(),
                                     symmetric=self.symmetric_int8)
            logits = onnx_logits(onnx_path, self.ds.x_val, self.threads)
        else:
            logits = predict_logits(model, self.ds.x_val)
        ev = self.task.evaluate(logits, self.ds.y_val, self.t_val, self.kd.alpha, self.kd.temperature)
        return Validation(accuracy=ev["accuracy"], kd_loss=ev["kd_loss"], cross_entropy=ev["cross_entropy"]), onnx_path

    def quantization_aware(self, model: nn.Module, onnx_path: Path, seed: int, on_step: Callable[[], None],
                           on_epoch: Callable[[int, float], None]) -> tuple[Path, list[float]]:
        """QAT with KD: BatchNorm folded, NNCF's fake quantization initialised on the calibration
        images, `qat_epochs` epochs of the run's KD terms at a tenth of the learning rate."""
        import copy

        from ..convert.qat import prepare_qat, qat_to_onnx, save_qat
        from ..export.run import calibration_subset

        out, saved = qat_paths(onnx_path)
        calib = torch.from_numpy(calibration_subset(self.ds, self.calibration_size, self.seed))
        qmodel, folded = prepare_qat(copy.deepcopy(model), calib, symmetric=self.symmetric_int8)
        hist = train(qmodel, self.ds.x_train, self.ds.y_train, epochs=self.qat_epochs, batch_size=self.batch_size,
                     lr=self.lr / 10, seed=seed, teacher=self.teacher, terms=self.terms, kd=self.kd,
                     teacher_channels=self.teacher_channels, pairs=self.feature_pairs,
                     student_modules=self._taps(model), unlabeled=self.unlabeled, on_step=on_step,
                     on_epoch=on_epoch, task=self.task)
        shape = [1, self.ds.in_channels, self.ds.image_size, self.ds.image_size]
        qat_to_onnx(qmodel, out, shape)
        save_qat(saved, qmodel, {"batchnorms_folded": folded, "qat_epochs": self.qat_epochs,
                                 "train_loss": hist.epoch_loss})
        return out, hist.epoch_loss

    def _calibration(self) -> list[np.ndarray]:
        if self._calib is None:
            from ..convert.qdq import calibration_batches
            from ..export.run import calibration_subset

            shape = [1, self.ds.in_channels, self.ds.image_size, self.ds.image_size]
            self._calib = calibration_batches(calibration_subset(self.ds, self.calibration_size, self.seed), shape)
        return self._calib
