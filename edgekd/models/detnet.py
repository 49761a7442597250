"""Object detectors: an encoder's feature pyramid under edgekd's light FPN neck and a one-stage,
anchor-free head (FCOS: per location class scores, distances to the box's four sides, and
centre-ness), and the decoding + NMS that turn its outputs into boxes.

    encoder (EdgeNet stages, or a timm backbone with features_only)
      -> features at strides 8, 16, 32 (a stride-2 3x3 convolution adds 32 where the encoder stops at 16)
      -> 1x1 laterals to D channels, top-down sum, 3x3 conv-BN-ReLU per level (FPN); D = 64, or
         64 x the width multiplier for EdgeDet (`neck_width`)
      -> a head shared by the levels: 3x3 conv-BN-ReLU, then 3x3 convolutions to K class logits,
         4 side distances (log, in units of the level's stride) and 1 centre-ness logit; or, with
         the GFL-style box head (`bins` = R > 0, `--det-head gfl`), to 4 x (R + 1) logits: each
         side a distribution over 0..R strides (Li et al., Generalized Focal Loss), its expected
         value the side's distance -- the distributions are what localisation distillation (LD)
         passes from a teacher to a student; the outputs keep the layout below either way

The output contract (one tensor, so the loop -- teacher cache, KD, export, parity -- treats it as
it treats dense logits): N x A x (K + 5), A = sum over the levels of (S / stride)^2 locations for a
square input of S px (a multiple of 32), level by level, row-major; channels are [K class logits,
log l, log t, log r, log b, centre-ness logit]. `layout(A)` recovers S from A. Scores are
sqrt(sigmoid(class) * sigmoid(centre-ness)), as FCOS ranks its detections."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from .arch import ArchSpec
from .segnet import EdgeNetEncoder, _conv_bn_relu, timm_encoder

STRIDES = (8, 16, 32)
NECK_CHANNELS = 64
BOX_CHANNELS = 5  # 4 side distances + centre-ness after the K class logits
MAX_LOG_DISTANCE = 10.0  # exp(10) strides: far beyond any image; keeps exp finite
PRIOR = 0.01  # the class logits start at sigmoid = 1 %: the focal loss's prior (RetinaNet, FCOS)
GFL_BINS = 16  # R of the GFL-style box head: sides of 0..16 strides (GFL's reg_max), 128 px at stride 8
MIN_DISTANCE = 1e-3  # strides: the log of a GFL side distance stays finite
HEADS = ("fcos", "gfl")


def head_bins(head: str) -> int:
    """The source record's `bins` of a box head named on the command line (--det-head)."""
    return GFL_BINS if head == "gfl" else 0


class DetNeck(nn.Module):
    """FPN over the three levels: laterals to `width`, top-down sum (nearest), a 3x3 conv each."""

    def __init__(self, channels: list[int], width: int = NECK_CHANNELS):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.outputs = nn.ModuleList(_conv_bn_relu(width, width, 3) for _ in channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p = [lat(f) for lat, f in zip(self.laterals, feats)]
        for i in range(len(p) - 2, -1, -1):
            p[i] = p[i] + F.interpolate(p[i + 1], size=p[i].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.outputs, p)]


class DetHead(nn.Module):
    """The FCOS head shared by every level (one tower conv), with a learnt scale per level for
    the box outputs. `bins` = R > 0: the GFL-style box head, 4 x (R + 1) logits a location, each
    side's distance the expectation of its softmax over 0..R strides; its log takes the place of
    FCOS's log distance in the outputs. While `capture` is set, the last forward's side logits
    (N x A x 4 x (R + 1), level by level like the outputs) are kept in `edges` for LD
    (`capturing_edges`)."""

    def __init__(self, num_classes: int, width: int = NECK_CHANNELS, levels: int = len(STRIDES), bins: int = 0):
        super().__init__()
        self.bins = bins
        self.tower = _conv_bn_relu(width, width, 3)
        self.cls = nn.Conv2d(width, num_classes, 3, padding=1)
        self.box = nn.Conv2d(width, 4 * (bins + 1) if bins else 4, 3, padding=1)
        self.ctr = nn.Conv2d(width, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(levels))
        if bins:
            self.register_buffer("project", torch.arange(bins + 1, dtype=torch.float32), persistent=False)
        self.capture = False
        self.edges: torch.Tensor | None = None
        assert self.cls.bias is not None and self.box.bias is not None
        nn.init.constant_(self.cls.bias, -math.log((1 - PRIOR) / PRIOR))
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, 0.0)

    def _sides(self, box: torch.Tensor, level: int, kept: list[torch.Tensor]) -> torch.Tensor:
        """The 4 box channels of the outputs: FCOS's scaled log distances, or the log of each GFL
        side distribution's expectation (its logits kept in `kept` while capturing)."""
        box = box * self.scales[level]
        if not self.bins:
            return box
        n, _, h, w = box.shape
        logits = box.reshape(n, 4, self.bins + 1, h, w)
        if self.capture:
            kept.append(logits.permute(0, 3, 4, 1, 2).reshape(n, h * w, 4, self.bins + 1))
        project = cast(torch.Tensor, self.project)  # 0..R
        dist = (logits.softmax(2) * project.reshape(1, 1, -1, 1, 1)).sum(2)  # N x 4 x h x w, in strides
        return torch.log(dist.clamp_min(MIN_DISTANCE))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out: list[torch.Tensor] = []
        kept: list[torch.Tensor] = []
        for i, f in enumerate(feats):
            t = self.tower(f)
            level = torch.cat([self.cls(t), self._sides(self.box(t), i, kept), self.ctr(t)], dim=1)
            out.append(level.flatten(2).transpose(1, 2))  # N x (h*w) x (K + 5)
        if self.capture and kept:
            self.edges = torch.cat(kept, dim=1)
        return torch.cat(out, dim=1)


def edge_bins(model: nn.Module) -> int:
    """R of the model's GFL-style box head (0: an FCOS head, or no edgekd detector)."""
    return max((m.bins for m in model.modules() if isinstance(m, DetHead)), default=0)


class capturing_edges:
    """`with capturing_edges(model) as cap:` forward passes inside keep the GFL head's side
    logits; `cap.edges()` is the last forward's (N x A x 4 x (R + 1)). Works through any wrapper
    (edgekd's ExternalNet, a student cut from a teacher): it finds the head among the modules."""

    def __init__(self, model: nn.Module):
        self.heads = [m for m in model.modules() if isinstance(m, DetHead) and m.bins]
        if not self.heads:
            raise ValueError("the model has no GFL-style box head (edge distributions)")

    def __enter__(self) -> capturing_edges:
        for h in self.heads:
            h.capture, h.edges = True, None
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.heads:
            h.capture, h.edges = False, None

    def edges(self) -> torch.Tensor:
        got = self.heads[0].edges
        if got is None:
            raise RuntimeError("no forward pass ran while capturing the edge distributions")
        return got


class DetModel(nn.Module):
    """An encoder's features at strides 8/16/32 under `DetNeck` and `DetHead`."""

    def __init__(self, encoder: nn.Module, channels: list[int], strides: list[int], num_classes: int,
                 width: int = NECK_CHANNELS, bins: int = 0):
        super().__init__()
        self.encoder = encoder
        self.keep = [strides.index(s) for s in STRIDES if s in strides]
        have = [channels[i] for i in self.keep]
        if not self.keep or strides[self.keep[0]] != STRIDES[0]:
            raise CheckpointError(f"a detector's encoder must give a feature map at stride {STRIDES[0]} "
                                  f"(it gives strides {strides})")
        extra = len(STRIDES) - len(self.keep)  # stride-2 convolutions on the last map for the missing levels
        self.extra = nn.ModuleList()
        for _ in range(extra):
            self.extra.append(nn.Sequential(nn.Conv2d(have[-1], width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                                            nn.ReLU(inplace=True)))
            have.append(width)
        self.neck = DetNeck(have, width)
        self.head = DetHead(num_classes, width, bins=bins)
        self.num_classes = num_classes
        self.output_stride = STRIDES[0]

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encoder(x)
        used = [feats[i] for i in self.keep]
        for conv in self.extra:
            used.append(conv(used[-1]))
        return self.neck(used)

    def dense_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(outputs, the neck's maps at strides 8/16/32): what feature imitation compares."""
        neck = self.levels(x)
        return self.head(neck), neck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.levels(x))


def build_detector(source: dict[str, Any], full: nn.Module | None = None) -> DetModel:
    """The structure of a detector from its source record (weights: `full` for a timm encoder's
    pretrained start, or a checkpoint loaded afterwards); `bins` in the record: the GFL-style box
    head's R (absent or 0: FCOS's)."""
    c, k, bins = int(source["in_channels"]), int(source["num_classes"]), int(source.get("bins") or 0)
    if source["encoder"] == "edgenet":
        arch = ArchSpec.model_validate(source["arch"])
        enc = EdgeNetEncoder(arch, c)
        return DetModel(enc, list(enc.channels), list(enc.strides), k, neck_width(arch.width), bins)
    if source["encoder"] == "timm":
        enc_t, channels, strides = timm_encoder(source["name"], c, full)
        return DetModel(enc_t, channels, strides, k, bins=bins)
    raise CheckpointError(f"unknown detector encoder {source['encoder']!r}")


def neck_width(width: float) -> int:
    """EdgeDet's neck and head channels: NECK_CHANNELS x the encoder's width multiplier, in whole
    groups of 16 (the runtimes' blocked kernels), at least 16: the neck and head scale with the
    student, or they would dominate a small one."""
    return max(16, int(NECK_CHANNELS * width / 16 + 0.5) * 16)


# -- the layout of the outputs -----------------------------------------------------------------

def locations(size: int) -> int:
    """A: the output rows of a square input of `size` px."""
    return sum((size // s) ** 2 for s in STRIDES)


def layout(rows: int) -> int:
    """The input size S of outputs with `rows` locations (the inverse of `locations`)."""
    size = 32 * round(math.sqrt(rows / sum((32 / s) ** 2 for s in STRIDES)))
    if locations(size) != rows:
        raise ValueError(f"{rows} output rows are no square input at strides {STRIDES}")
    return size


def points(size: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres A x 2 in input pixels, stride A) of every output row."""
    centres, strides = [], []
    for s in STRIDES:
        n = size // s
        c = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) * s
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        centres.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
        strides.append(torch.full((n * n,), float(s), device=device))
    return torch.cat(centres), torch.cat(strides)


def decode(out: torch.Tensor, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes N x A x 4 as x1 y1 x2 y2 in input pixels, scores N x A x K) of raw outputs."""
    k = out.shape[-1] - BOX_CHANNELS
    size = size or layout(out.shape[1])
    centres, strides = points(size, out.device)
    dist = torch.exp(out[..., k:k + 4].float().clamp(max=MAX_LOG_DISTANCE)) * strides[None, :, None]
    boxes = torch.cat([centres - dist[..., :2], centres + dist[..., 2:]], dim=-1).clamp(0, size)
    scores = torch.sqrt(torch.sigmoid(out[..., :k].float()) * torch.sigmoid(out[..., k + 4:k + 5].float()))
    return boxes, scores


def select(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, iou_threshold: float,
           max_detections: int, pre_nms: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes D x 4, scores D, labels D) of one image: the `pre_nms` best (location, class) pairs
    above the threshold, class-wise NMS (torchvision), the `max_detections` best kept. Traceable:
    the same code runs inside an exported graph."""
    import torchvision  # noqa: F401  (registers torchvision::nms; imported before any tracing: WithNMS)

    k = scores.shape[-1]
    flat = scores.reshape(-1)
    top, idx = flat.topk(min(pre_nms, flat.numel()))
    keep = top > score_threshold
    top, idx = top[keep], idx[keep]
    rows, labels = idx // k, idx % k
    cand = boxes[rows]
    # class-wise NMS as torchvision's batched_nms does it (each class's boxes shifted apart), calling
    # the operator directly: the Python wrapper's availability check does not trace into ONNX
    shifted = cand + (labels.to(cand.dtype) * (boxes.max() + 1))[:, None]
    kept = torch.ops.torchvision.nms(shifted, top, iou_threshold)[:max_detections]
    return cand[kept], top[kept], labels[kept]


SURE = 12.0  # a logit whose sigmoid is 1 to 6 decimals: the centre-ness of an encoded detection
NOTHING = -12.0  # the class logit of a location without a detection


def encode(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, size: int, num_classes: int
           ) -> torch.Tensor:
    """Detections of one image as output rows A x (K + 5) that `decode` turns back into them: each
    at the location of its level (the level whose side range holds half its larger side) nearest
    its centre, inside the box where one is (then the box is exact; a box thinner than the stride
    between locations may have none: its sides are then kept at least half a pixel from the
    location, so it grows by up to half a stride), the class logit logit(score^2) (with a sure
    centre-ness the decoded score is the score); where two fall on one location the surer stays.
    What a teacher known only by its boxes gives the teacher cache."""
    out = torch.full((locations(size), num_classes + BOX_CHANNELS), NOTHING)
    out[:, num_classes:num_classes + 4] = 0.0
    centres, strides = points(size)
    level_of = torch.cat([torch.full(((size // s) ** 2,), i) for i, s in enumerate(STRIDES)])
    bounds = (64.0, 128.0)  # the FCOS level ranges of edgekd.distill.detection, in max side distance
    for i in scores.argsort().tolist():  # surer ones last: they overwrite
        x1, y1, x2, y2 = boxes[i].tolist()
        half = max(x2 - x1, y2 - y1) / 2
        level = 0 if half <= bounds[0] else 1 if half <= bounds[1] else 2
        on = torch.nonzero(level_of == level).flatten()
        c = centres[on]
        inside = on[(c[:, 0] > x1) & (c[:, 0] < x2) & (c[:, 1] > y1) & (c[:, 1] < y2)]
        on = inside if len(inside) else on  # a location inside the box encodes it exactly
        j = int(on[((centres[on] - torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2])) ** 2).sum(1).argmin()])
        px, py = centres[j].tolist()
        s = float(strides[j])
        dist = torch.tensor([px - x1, py - y1, x2 - px, y2 - py]).clamp_min(0.5)
        p = min(max(float(scores[i]) ** 2, 1e-6), 1 - 1e-6)
        out[j, :num_classes] = NOTHING
        out[j, int(labels[i])] = math.log(p / (1 - p))
        out[j, num_classes:num_classes + 4] = torch.log(dist / s)
        out[j, num_classes + 4] = SURE
    return out


class DetectionsAsRows(nn.Module):
    """A detector known by its detections only (a torchvision detection model in eval mode, or any
    module returning per image a dict of boxes / scores / labels, or one (boxes, scores, labels)
    tuple for a batch of 1), its detections encoded as output rows (`encode`): such a teacher
    teaches by pseudo-boxes. Labels are the data's class indices (0..K-1)."""

    boxes_only = True

    def __init__(self, inner: nn.Module, num_classes: int):
        super().__init__()
        self.inner, self.num_classes = inner, num_classes

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inner.eval()
        out = self.inner(x)
        per = out if isinstance(out, list) else [dict(zip(("boxes", "scores", "labels"), out))]
        return torch.stack([encode(d["boxes"].float(), d["scores"].float(), d["labels"].long(), x.shape[-1],
                                   self.num_classes) for d in per])


def gives_detections(out: Any) -> bool:
    """Whether a model's output is detections (per-image dicts, or a boxes/scores/labels tuple)."""
    if isinstance(out, list) and out and isinstance(out[0], dict):
        return {"boxes", "scores", "labels"} <= set(out[0])
    return isinstance(out, tuple) and len(out) == 3 and out[0].dim() == 2 and out[0].shape[-1] == 4


def boxes_only(model: nn.Module) -> bool:
    """A teacher that gives boxes only (itself, or the program inside edgekd's wrapper)."""
    return bool(getattr(model, "boxes_only", False) or getattr(getattr(model, "inner", None), "boxes_only", False))


class WithNMS(nn.Module):
    """A detector whose outputs are detections: `boxes` (D x 4, x1 y1 x2 y2 in input pixels),
    `scores` (D) and `labels` (D, class indices), decoding and NMS inside (batch 1, the export)."""

    def __init__(self, model: nn.Module, size: int, score_threshold: float, iou_threshold: float,
                 max_detections: int):
        import torchvision  # noqa: F401  (its first import runs operators a trace cannot hold)

        super().__init__()
        self.model, self.size = model, size
        self.score_threshold, self.iou_threshold, self.max_detections = score_threshold, iou_threshold, max_detections

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores = decode(self.model(x), self.size)
        return select(boxes[0], scores[0], self.score_threshold, self.iou_threshold, self.max_detections)
