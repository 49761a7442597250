"""Training loops: the teacher (cross-entropy) and students (KD from teacher logits)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .losses import response_kd_loss

# Given the batch's sample indices and images, the teacher's logits for that batch.
SoftTargets = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainHistory:
    epoch_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def _flip_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips: label-preserving for top-down imagery."""
    n = x.shape[0]
    h = torch.rand(n, generator=gen) < 0.5
    v = torch.rand(n, generator=gen) < 0.5
    x = torch.where(h[:, None, None, None], x.flip(3), x)
    return torch.where(v[:, None, None, None], x.flip(2), x)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
          seed: int, soft_targets: SoftTargets | None = None, alpha: float = 0.5, temperature: float = 4.0,
          on_step: Callable[[], None] | None = None) -> TrainHistory:
    """AdamW with a cosine schedule. With `soft_targets` the loss is the response KD loss and
    images are not augmented (cached teacher logits belong to the unaugmented images); without,
    plain cross-entropy with random flips."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    hist = TrainHistory()
    model.train()
    for _ in range(epochs):
        t0, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            if soft_targets is None:
                loss = F.cross_entropy(model(_flip_augment(xb, gen)), yb)
            else:
                loss = response_kd_loss(model(xb), soft_targets(idx, xb), yb, alpha=alpha, temperature=temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if on_step:
                on_step()
        hist.epoch_loss.append(total / seen)
        hist.epoch_seconds.append(time.perf_counter() - t0)
    recalibrate_batchnorm(model, x, batch_size)
    model.eval()
    return hist


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over `x` with the final weights.

    The running averages kept during training lag behind the weights (momentum 0.1); after a
    short training they are far off and the model in eval mode predicts one class. One forward
    pass over the training images fixes that."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    # mixed batches: the averaged per-batch variance misses the between-batch part, so batches
    # must look like the data set (a class-sorted order would shrink the variance)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for i in range(0, len(x), batch_size):
        model(x[order[i:i + batch_size]])
    for bn, mom in zip(bns, saved):
        bn.momentum = mom


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def cached_targets(logits: torch.Tensor) -> SoftTargets:
    """Soft targets looked up from teacher logits computed once for the whole training set."""
    return lambda idx, _xb: logits[idx]


def live_targets(teacher: nn.Module) -> SoftTargets:
    """Soft targets from a teacher forward pass on every batch (the slow path, for comparison)."""
    teacher.eval()

    def run(_idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return teacher(xb)

    return run


def steps(n_samples: int, batch_size: int, epochs: int) -> int:
    return math.ceil(n_samples / batch_size) * epochs


@torch.no_grad()
def evaluate(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None,
             alpha: float = 0.5, temperature: float = 4.0) -> dict[str, float]:
    """Accuracy, cross-entropy and (with teacher logits) the response KD loss of given logits."""
    out = {
        "accuracy": float((logits.argmax(1) == y).float().mean()),
        "cross_entropy": float(F.cross_entropy(logits, y)),
    }
    if teacher_logits is not None:
        out["kd_loss"] = float(response_kd_loss(logits, teacher_logits, y, alpha=alpha, temperature=temperature))
    return out
