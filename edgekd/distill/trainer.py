"""Training loops: the teacher (cross-entropy) and students (KD from a teacher source)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..data.store import LAZY, ImageArray, Images, StackedImages, inference_batch
from ..data.store import Labels as LabelsArray
from ..errors import ConfigError, TrainingError
from ..interrupts import check_interrupted
from ..models.detnet import capturing_edges
from ..models.taps import resolve_modules, tapped_channels, tapped_features
from .losses import KDInputs, KDSettings, combined_loss, history_loss, needs
from .teacher import InMemoryTeacher, LiveTeacher, TeacherSource, apply_view


@dataclass
class TrainHistory:
    epoch_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


@dataclass
class History:
    """The previous student's logits on every training image (its own classes only), for the
    history term mu * L_history(S_t, S_{t-1}) of an incremental update (edgekd update)."""

    logits: torch.Tensor  # (N, previous classes), row i for training image i
    weight: float  # mu; 0 is plain fine-tuning
    temperature: float = 4.0


@dataclass
class Unlabeled:
    """Unlabelled images and the teacher's outputs for them (the semi-supervised term)."""

    x: torch.Tensor
    teacher: TeacherSource

    def draw(self, model: nn.Module, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(student logits, teacher logits) of `n` random unlabelled images in a random cached view."""
        uidx = torch.randint(len(self.x), (n,), generator=gen)
        uview = int(torch.randint(self.teacher.views, (1,), generator=gen))
        ux = apply_view(self.x[uidx], uview)
        return model(ux), self.teacher.batch(uidx, uview, ux).logits[0]


class LabelOps(Protocol):
    """What training asks of a task about its labels (edgekd.tasks.Task keeps this contract)."""

    def augment(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def view_labels(self, y: torch.Tensor, view: int) -> torch.Tensor: ...

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def kd_rows(self, student: torch.Tensor, y: torch.Tensor, teachers: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]: ...


class PerImage:
    """Labels of classification: one class per image, kept by every view and augmentation."""

    def augment(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(x, gen, kinds), y

    def view_labels(self, y: torch.Tensor, view: int) -> torch.Tensor:
        return y

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def kd_rows(self, student: torch.Tensor, y: torch.Tensor, teachers: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        return student, y, teachers


AUGMENTATIONS = ("flip", "rot90", "crop")  # label-preserving for top-down imagery; no colour changes


def augment(x: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...] = ("flip",)) -> torch.Tensor:
    """Random remote-sensing augmentations of a batch, each image its own draw: `flip`
    (horizontal/vertical), `rot90` (0/90/180/270 degrees, square images), `crop` (a random
    crop of 60-100 % of the side, resized back, bilinear). No colour jitter: the bands of
    multispectral images keep their values."""
    return augment_with_masks(x, None, gen, kinds)[0]


def augment_with_masks(x: torch.Tensor, masks: torch.Tensor | None, gen: torch.Generator,
                       kinds: tuple[str, ...] = ("flip",)) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`augment`, with each image's mask (N, H, W), when given, moved alike (a crop resized
    nearest-neighbour); the same random draws with or without masks."""
    n = x.shape[0]
    if "flip" in kinds:
        h = torch.rand(n, generator=gen) < 0.5
        v = torch.rand(n, generator=gen) < 0.5
        x = torch.where(h[:, None, None, None], x.flip(3), x)
        x = torch.where(v[:, None, None, None], x.flip(2), x)
        if masks is not None:
            masks = torch.where(h[:, None, None], masks.flip(2), masks)
            masks = torch.where(v[:, None, None], masks.flip(1), masks)
    if "rot90" in kinds and x.shape[-1] == x.shape[-2]:
        k = torch.randint(4, (n,), generator=gen)
        x = torch.stack([torch.rot90(img, int(r), dims=(-2, -1)) for img, r in zip(x, k)])
        if masks is not None:
            masks = torch.stack([torch.rot90(m, int(r), dims=(-2, -1)) for m, r in zip(masks, k)])
    if "crop" in kinds:
        size = x.shape[-1]
        sides = (torch.rand(n, generator=gen) * 0.4 + 0.6) * size
        out, out_masks = [], []
        for i, (img, side) in enumerate(zip(x, sides)):
            s = max(1, int(side))
            top, left = (int(torch.randint(size - s + 1, (1,), generator=gen)) for _ in range(2))
            crop = img[None, :, top:top + s, left:left + s]
            out.append(F.interpolate(crop, size=(x.shape[-2], size), mode="bilinear", align_corners=False)[0])
            if masks is not None:
                m = masks[i][None, None, top:top + s, left:left + s].float()
                out_masks.append(F.interpolate(m, size=masks.shape[-2:], mode="nearest")[0, 0].to(masks.dtype))
        x = torch.stack(out)
        masks = torch.stack(out_masks) if masks is not None else None
    return x, masks


def feature_pairs(student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
    """(student feature map, teacher feature map) pairs by relative depth: each student map is
    guided by the teacher map at the nearest relative depth (a deeper teacher layer may guide a
    shallower student layer)."""
    return [(s, min(range(teacher_depth), key=lambda t: abs((t + 1) / teacher_depth - (s + 1) / student_depth)))
            for s in range(student_depth)]


def make_adapters(student_channels: list[int], teacher_channels: list[int],
                  pairs: list[tuple[int, int]]) -> nn.ModuleList:
    """A learned 1x1 convolution per pair, mapping student channels to teacher channels."""
    return nn.ModuleList(nn.Conv2d(student_channels[s], teacher_channels[t], 1, bias=False) for s, t in pairs)


def _feature_reader(model: nn.Module, student_modules: list[str] | None
                    ) -> Callable[[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]]:
    """(logits, feature maps, embedding) of the student: its named modules (resolved once, not
    every batch) or its own stages."""
    if not student_modules:
        net: Any = model  # EdgeNet, ExternalNet; read only when a term needs features
        return lambda xb: net.forward_features(xb)
    modules = resolve_modules(model, student_modules, "student")
    return lambda xb: tapped_features(model, xb, student_modules, modules=modules)


def _adapters(model: nn.Module, x: Images, student_modules: list[str] | None, teacher_channels: list[int],
              pairs: list[tuple[int, int]] | None) -> tuple[nn.ModuleList, list[tuple[int, int]]]:
    """The feature term's adapters and pairs: the named modules in order, or the model's stages
    paired by relative depth (or as given)."""
    net: Any = model
    if student_modules:
        channels = tapped_channels(model, student_modules, x.shape[1], x.shape[-1])
        pairs = [(i, i) for i in range(len(student_modules))]
    else:
        channels = list(net.stage_channels)
    pairs = pairs or feature_pairs(len(channels), len(teacher_channels))
    return make_adapters(channels, teacher_channels, pairs), pairs


def train(model: nn.Module, x: Images, y: LabelsArray, *, epochs: int, batch_size: int, lr: float,
          seed: int, teacher: TeacherSource | None = None, terms: list[tuple[str, float]] | None = None,
          kd: KDSettings | None = None, pairs: list[tuple[int, int]] | None = None,
          teacher_channels: list[int] | None = None, student_modules: list[str] | None = None,
          unlabeled: Unlabeled | None = None, history: History | None = None,
          augmentations: tuple[str, ...] = ("flip",),
          on_step: Callable[[], None] | None = None,
          on_epoch: Callable[[int, float], None] | None = None,
          shard: Shard | None = None, task: LabelOps | None = None) -> TrainHistory:
    """AdamW with a one-cycle schedule.

    Without a teacher: cross-entropy with random flips (how the teacher is trained). With one:
    the weighted KD `terms` (default: the response loss), each batch seen in a random one of the
    teacher source's cached views, so every target belongs to exactly the image the student sees.
    `student_modules`: the student's feature maps are these named modules' outputs, paired in
    order with the teacher's (feature_pairs by module name). `on_step` is called after each
    optimiser step, `on_epoch(epoch, mean loss)` after each epoch (1-based). `augmentations`:
    what cross-entropy training draws per image (see `augment`). `history`: the
    previous model's outputs, distilled into this one as well (an incremental update, of a
    student or of a teacher trained by cross-entropy; a teacher source must then hold one view,
    the images as they are, and cross-entropy training leaves out the flips). `shard`: data-parallel
    training (seed eq. 23): every process draws the same batches and trains on its own slice of
    each, the gradients averaged over the processes before each step -- the mean of the shards'
    KD losses, as one process training on the whole batch. `task` (edgekd.tasks; default `PerImage`)
    says what a label is: masks move with their images, KD terms see rows of valid pixels."""
    _check_history(model, history, teacher)
    task = task or PerImage()
    gen = torch.Generator().manual_seed(seed)
    # data-parallel ranks must draw the same batches and views: those come from a generator of
    # their own that per-image draws (which differ with a rank's slice) never advance
    batch_gen = torch.Generator().manual_seed(seed + 7919) if shard is not None else gen
    terms = terms or [("response", 1.0)]
    kd = kd or KDSettings()
    # a model that computes its own loss (a torchvision detector) learns from the teacher's boxes
    # (_KDStep): the terms' other inputs (features, dense maps) are not read from it
    want = needs(terms) if teacher is not None and own_loss(model) is None else frozenset()
    adapters = None
    params = list(model.parameters())
    student_features = _feature_reader(model, student_modules)
    if "features" in want:
        adapters, pairs = _adapters(model, x, student_modules, teacher_channels or [], pairs)
        params += list(adapters.parameters())
    step = _KDStep(model, teacher, terms, kd, want, student_features, adapters, pairs, unlabeled, history, task) \
        if teacher is not None else None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * math.ceil(len(y) / batch_size),
                                                pct_start=0.15)
    hist = TrainHistory()
    model.train()
    for _ in range(epochs):
        t0, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(y), generator=batch_gen)
        for idx, xi in batches(x, order, batch_size, shard):
            if step is None:
                loss = _cross_entropy(model, task, xi, y[idx], idx, history, gen, augmentations)
            else:
                view = int(torch.randint(step.teacher.views, (1,), generator=batch_gen))
                loss = step.loss(xi, y[idx], idx, view, gen)
            if not torch.isfinite(loss):
                raise TrainingError(f"training diverged: the loss is {loss.item()} at epoch {len(hist.epoch_loss) + 1} "
                                    f"(lr {lr:g}); lower --lr (or lr in the config) and check the KD weights")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if shard is not None:
                shard.average_gradients(params)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if on_step:
                on_step()
        if shard is not None:
            total, seen = shard.sum(total, seen)  # every shard's loss in the epoch's figure
        hist.epoch_loss.append(total / seen)
        hist.epoch_seconds.append(time.perf_counter() - t0)
        if on_epoch:
            on_epoch(len(hist.epoch_loss), total / seen)
    recalibrate_batchnorm(model, x, batch_size)
    model.eval()
    return hist


def _check_history(model: nn.Module, history: History | None, teacher: TeacherSource | None) -> None:
    if history is None:
        return
    if own_loss(model) is not None:
        raise ValueError("a model that computes its own loss (a torchvision detector) has no outputs for the "
                         "history term to distil: update it without one")
    if teacher is not None and teacher.views != 1:
        raise ValueError("the history term needs a teacher source with one view (the images as they are)")


def _cross_entropy(model: nn.Module, task: LabelOps, xi: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor,
                   history: History | None, gen: torch.Generator, augmentations: tuple[str, ...]) -> torch.Tensor:
    """The loss of a batch without a teacher: the task's augmentations (none when a history term
    needs the images as they are), its cross-entropy, and the history term."""
    if history is None:
        xi, yb = task.augment(xi, yb, gen, augmentations)
    own = own_loss(model)
    if own is not None:  # a model that computes its losses itself (torchvision's detectors)
        return own(xi, yb)
    logits = model(xi)
    return task.loss(logits, yb) + _history(history, logits, idx)


@dataclass
class _KDStep:
    """The KD loss of one batch: the student on the batch's cached teacher view, the run's terms
    (features, embedding, unlabelled draws when they need them) and the history term."""

    model: nn.Module
    teacher: TeacherSource
    terms: list[tuple[str, float]]
    kd: KDSettings
    want: frozenset[str]
    student_features: Callable[[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]]
    adapters: nn.ModuleList | None
    pairs: list[tuple[int, int]] | None
    unlabeled: Unlabeled | None
    history: History | None
    task: LabelOps

    def loss(self, xi: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor, view: int,
             gen: torch.Generator) -> torch.Tensor:
        xb, yb = apply_view(xi, view), self.task.view_labels(yb, view)
        tb = self.teacher.batch(idx, view, xb)
        own = own_loss(self.model)
        if own is not None:  # torchvision's detectors: their own losses on the labels + the teacher's sure boxes
            from .detection import pseudo_boxes

            return own(xb, pseudo_boxes(tb.logits[0].float(), yb))
        with capturing_edges(self.model) if "edges" in self.want else contextlib.nullcontext() as cap:
            if self.want & {"features", "embedding"}:
                s_logits, s_feats, s_emb = self.student_features(xb)
            else:
                s_logits, s_feats, s_emb = self.model(xb), [], None
            s_edges = cap.edges() if cap is not None else None
        paired = self.adapters is not None
        t_logits = [t.float() for t in tb.logits]  # dense teacher outputs are cached in float16
        rows, labels, t_rows = self.task.kd_rows(s_logits, yb, t_logits)
        batch = KDInputs(student_logits=rows, labels=labels, teacher_logits=t_rows, adapters=self.adapters,
                         student_feats=[s_feats[s] for s, _ in self.pairs or []] if paired else [],
                         teacher_feats=[tb.feats[t] for _, t in self.pairs or []] if paired else [],
                         student_emb=s_emb, teacher_emb=tb.emb,
                         student_dense=s_logits if "dense" in self.want else None,
                         teacher_dense=t_logits[0] if "dense" in self.want else None,
                         student_edges=s_edges, teacher_edges=None if tb.edges is None else tb.edges.float())
        if self.unlabeled is not None and "unlabeled" in self.want:
            batch.unlabeled_student_logits, batch.unlabeled_teacher_logits = self.unlabeled.draw(
                self.model, len(idx), gen)
        return combined_loss(self.terms, batch, self.kd) + _history(self.history, s_logits, idx)


class _Chunks(torch.utils.data.Dataset):
    """Batches of an ImageArray by precomputed index chunks (read by DataLoader workers)."""

    def __init__(self, x: ImageArray | StackedImages, chunks: list[torch.Tensor]):
        self.x, self.chunks = x, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.chunks[i], self.x[self.chunks[i]]


SPARE_CORES_FOR_WORKERS = 4  # a reader process only pays where it does not take a core from training


def data_workers() -> int:
    """Worker processes reading cached images while the model trains: EDGEKD_DATA_WORKERS, else
    none on a machine of up to 4 logical CPUs (measured on 2 cores: a reader process took a core
    from the training threads and made each epoch 10-19 % slower than reading in the training
    process) and a quarter of the CPUs, at most 4, on larger ones."""
    import os

    raw = os.environ.get("EDGEKD_DATA_WORKERS", "").strip()
    if raw:
        try:
            return max(0, int(raw))
        except ValueError:
            raise ConfigError(f"EDGEKD_DATA_WORKERS={raw!r} is not a whole number; set it to 0 (read in the "
                             "training process) or a count of reader processes, or unset it") from None
    cpus = os.cpu_count() or 1
    return 0 if cpus <= SPARE_CORES_FOR_WORKERS else min(4, cpus // 4)


@dataclass(frozen=True)
class Shard:
    """This process's part of data-parallel training: rank of world, over the torch.distributed
    process group the launcher (Ray Train) set up."""

    rank: int
    world: int

    def split(self, chunks: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's slice of every batch; a last batch smaller than the world is left out on
        every rank alike (each rank must take the same number of steps)."""
        return [c[self.rank::self.world] for c in chunks if len(c) >= self.world]

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Every parameter's gradient averaged over the ranks (one all-reduce of a flat buffer; a
        parameter without a gradient counts as zero)."""
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def sum(self, total: float, seen: int) -> tuple[float, int]:
        import torch.distributed as dist

        t = torch.tensor([total, float(seen)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]), int(t[1])


def batches(x: Images, order: torch.Tensor, batch_size: int, shard: Shard | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(indices, images) of each batch in `order` (this rank's slice of it with a `shard`): a
    tensor is indexed in place; images served from the image cache are read by a
    torch.utils.data pipeline whose workers decode the next batches while this one trains."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shard is not None:
        chunks = shard.split(chunks)
    if not isinstance(x, LAZY):
        for idx in chunks:
            yield idx, x[idx]
        return
    workers = data_workers() if len(chunks) > 1 else 0
    loader = torch.utils.data.DataLoader(_Chunks(x, chunks), batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    for batch in loader:
        check_interrupted()
        yield batch
    check_interrupted()  # a Ctrl-C dropped while the loader's iterator shut its workers down


def _history(history: History | None, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor | float:
    """mu * L_history for the batch `idx`, or 0 without a history term."""
    if history is None or history.weight <= 0:
        return 0.0
    return history.weight * history_loss(logits, history.logits[idx], history.temperature)


def own_loss(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The loss a model computes itself from images and labels (`own_loss`, on it or on the
    program inside edgekd's wrapper, which then must not normalise: it does so inside)."""
    own = getattr(model, "own_loss", None) or getattr(getattr(model, "inner", None), "own_loss", None)
    return own if callable(own) else None


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: Images, batch_size: int = 256) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over `x` with the final weights.

    The running averages kept during training lag behind the weights (momentum 0.1); after a
    short training they are far off and the model in eval mode predicts one class. One forward
    pass over the training images fixes that."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(bn.momentum, {k: v.clone() for k, v in bn.state_dict().items()}) for bn in bns]
    reached: set[nn.Module] = set()
    hooks = [bn.register_forward_pre_hook(lambda m, _: reached.add(m)) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    # mixed batches: the averaged per-batch variance misses the between-batch part, so batches
    # must look like the data set (a class-sorted order would shrink the variance)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    # a model that computes its own loss may give a forward of its BatchNorm layers (see own_loss)
    forward = getattr(getattr(model, "inner", model), "calibration_forward", model)
    try:
        for i in range(0, len(x), batch_size):
            forward(x[order[i:i + batch_size]])
    finally:
        for h in hooks:
            h.remove()
    for bn, (mom, state) in zip(bns, saved):
        bn.momentum = mom
        if bn not in reached:  # a layer that forward does not run keeps what training left it
            bn.load_state_dict(state)


@torch.no_grad()
def predict_logits(model: nn.Module, x: Images, batch_size: int | None = None) -> torch.Tensor:
    model.eval()
    batch_size = batch_size or inference_batch(x)
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def cached_targets(logits: torch.Tensor) -> InMemoryTeacher:
    """Teacher logits computed once for the whole training set (one view)."""
    return InMemoryTeacher(logits)


def live_targets(teacher: nn.Module) -> LiveTeacher:
    """A teacher forward pass on every batch (the slow path, for comparison)."""
    return LiveTeacher([teacher])


def steps(n_samples: int, batch_size: int, epochs: int) -> int:
    return math.ceil(n_samples / batch_size) * epochs


@torch.no_grad()
def evaluate(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None,
             alpha: float = 0.5, temperature: float = 4.0) -> dict[str, float]:
    """Accuracy, cross-entropy and (with teacher logits) the response KD loss of given logits."""
    from .losses import response_kd_loss

    out = {
        "accuracy": float((logits.argmax(1) == y).float().mean()),
        "cross_entropy": float(F.cross_entropy(logits, y)),
    }
    if teacher_logits is not None:
        out["kd_loss"] = float(response_kd_loss(logits, teacher_logits, y, alpha=alpha, temperature=temperature))
    return out
