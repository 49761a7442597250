"""Detection losses: FCOS's supervised loss and the KD terms for one-stage detectors.

Labels of a detection batch are boxes padded to one tensor, N x M x 5 rows of
[class, x1, y1, x2, y2] in input pixels, class -1 for padding (edgekd.data.boxes). Outputs are
the N x A x (K + 5) rows of edgekd.models.detnet.

- `assign`: FCOS's targets. A location is positive for a box when it lies inside the box, within
  1.5 strides of its centre (centre sampling) and the box's largest side distance falls in the
  level's range; among several boxes the smallest wins.
- `detection_loss`: sigmoid focal loss on the class logits (all locations, / positives), GIoU loss
  of the decoded boxes on positives weighted by the centre-ness target, BCE on centre-ness.
- `head` (dense head KD): alpha * the supervised loss + (1 - alpha) * (tau^2 * BCE of the
  student's class maps against the teacher's at temperature tau, each location weighted by the
  teacher's foreground score (its best class score), positives weighted 1; + GIoU of the
  student's boxes against the teacher's and BCE on centre-ness, on the same weights).
- `ld` (localisation distillation, Zheng et al. CVPR 2022), for GFL-style heads on both sides:
  tau^2 * KL of each box side's distribution over 0..R strides, the teacher's softened at tau
  against the student's, on the same location weights as `head` (the teacher's foreground score,
  the labels' positives 1) -- the distillation alone, added to `head` or `pseudo-box`.
- `pseudo-box`: the teacher's detections (score >= PSEUDO_SCORE, after NMS) that no labelled box
  already covers (IoU < 0.5) join the labels as extra targets of the supervised loss: works for a
  teacher known only by its detections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.detnet import BOX_CHANNELS, STRIDES, decode, layout, points, select
from .losses import KD_LOSSES, KDInputs, KDSettings

LEVEL_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, float("inf")))  # max side distance per level (px)
CENTRE_RADIUS = 1.5  # centre sampling, in strides
PSEUDO_SCORE = 0.5  # teacher detections at least this sure become pseudo-boxes
PSEUDO_IOU = 0.5  # a teacher detection overlapping a labelled box this much is that box


def level_ranges(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) of the max side distance a location of each output row may regress."""
    lo, hi = [], []
    for s, (a, b) in zip(STRIDES, LEVEL_RANGES):
        n = (size // s) ** 2
        lo.append(torch.full((n,), a))
        hi.append(torch.full((n,), b))
    return torch.cat(lo), torch.cat(hi)


def assign(labels: torch.Tensor, size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS targets of a batch: (class targets N x A x K one-hot, box targets N x A x 4 as x1 y1
    x2 y2, positive mask N x A)."""
    centres, strides = points(size)
    lo, hi = level_ranges(size)
    n, a = labels.shape[0], centres.shape[0]
    cls_t = torch.zeros(n, a, num_classes)
    box_t = torch.zeros(n, a, 4)
    pos = torch.zeros(n, a, dtype=torch.bool)
    for i in range(n):
        gt = labels[i][labels[i, :, 0] >= 0]
        if len(gt) == 0:
            continue
        boxes = gt[:, 1:5]
        px, py = centres[:, 0:1], centres[:, 1:2]
        ltrb = torch.stack([px - boxes[:, 0], py - boxes[:, 1], boxes[:, 2] - px, boxes[:, 3] - py], -1)  # A x M x 4
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        r = CENTRE_RADIUS * strides[:, None]
        near = ((px - cx).abs() < r) & ((py - cy).abs() < r)
        side = ltrb.max(-1).values
        ok = (ltrb.min(-1).values > 0) & near & (side >= lo[:, None]) & (side <= hi[:, None])
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(a, -1)
        area = torch.where(ok, area, torch.full_like(area, float("inf")))
        best_area, best = area.min(1)
        hit = torch.isfinite(best_area)
        pos[i] = hit
        box_t[i, hit] = boxes[best[hit]]
        cls_t[i, hit, gt[best[hit], 0].long()] = 1.0
    return cls_t, box_t, pos


def centreness(box_t: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """FCOS centre-ness of each location in its target box: sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))."""
    left, t = centres[..., 0] - box_t[..., 0], centres[..., 1] - box_t[..., 1]
    r, b = box_t[..., 2] - centres[..., 0], box_t[..., 3] - centres[..., 1]
    lr = torch.minimum(left, r) / torch.maximum(left, r).clamp_min(1e-6)
    tb = torch.minimum(t, b) / torch.maximum(t, b).clamp_min(1e-6)
    return torch.sqrt((lr * tb).clamp_min(0))


def detection_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """FCOS's loss of raw outputs N x A x (K + 5) against padded boxes N x M x 5."""
    from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss  # on first use: a run without
    # detection does not pay torchvision's import (its operators pull in torch._dynamo)

    k = out.shape[-1] - BOX_CHANNELS
    size = layout(out.shape[1])
    cls_t, box_t, pos = assign(labels.float(), size, k)
    n_pos = max(float(pos.sum()), 1.0)
    cls_loss = sigmoid_focal_loss(out[..., :k].float(), cls_t, reduction="sum") / n_pos
    if not pos.any():
        return cls_loss + 0.0 * out.sum()
    boxes, _ = decode(out, size)
    centres, _ = points(size)
    ctr_t = centreness(box_t, centres[None].expand_as(box_t[..., :2]))[pos]
    giou = generalized_box_iou_loss(boxes[pos], box_t[pos], reduction="none")
    box_loss = (giou * ctr_t).sum() / ctr_t.sum().clamp_min(1e-6)
    ctr_loss = F.binary_cross_entropy_with_logits(out[..., k + 4][pos].float(), ctr_t, reduction="sum") / n_pos
    return cls_loss + box_loss + ctr_loss


def soft_map_kd(student_cls: torch.Tensor, teacher_cls: torch.Tensor, weights: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """tau^2 * sum_a w_a * sum_k BCE(sigmoid(s_ak / tau), sigmoid(t_ak / tau)) / sum_a w_a: the
    class maps of a one-stage head distilled location by location (weights N x A)."""
    target = torch.sigmoid(teacher_cls.float() / temperature)
    bce = F.binary_cross_entropy_with_logits(student_cls.float() / temperature, target, reduction="none").sum(-1)
    return temperature ** 2 * (weights * bce).sum() / weights.sum().clamp_min(1e-6)


def head_kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float,
                 temperature: float) -> torch.Tensor:
    """alpha * detection_loss + (1 - alpha) * (soft class maps + boxes and centre-ness imitated),
    each location weighted by the teacher's foreground score, the labels' positives weighted 1."""
    if student.shape != teacher.shape:
        raise ConfigError(f"the head KD term needs the student's and the teacher's outputs on one layout (student "
                          f"{tuple(student.shape)}, teacher {tuple(teacher.shape)}); use --kd pseudo-box")
    from torchvision.ops import generalized_box_iou_loss

    k = student.shape[-1] - BOX_CHANNELS
    size = layout(student.shape[1])
    w = kd_weights(teacher, labels)
    t_boxes, _ = decode(teacher.detach(), size)
    soft = soft_map_kd(student[..., :k], teacher[..., :k], w, temperature)
    s_boxes, _ = decode(student, size)
    fg = w > 0.05
    box = (generalized_box_iou_loss(s_boxes[fg], t_boxes[fg], reduction="none") * w[fg]).sum() / \
        w[fg].sum().clamp_min(1e-6) if fg.any() else student.sum() * 0.0
    ctr = (F.binary_cross_entropy_with_logits(student[..., k + 4].float(), torch.sigmoid(teacher[..., k + 4].float()),
                                              reduction="none") * w).sum() / w.sum().clamp_min(1e-6)
    return alpha * detection_loss(student, labels) + (1 - alpha) * (soft + box + ctr)


def ld_loss(student_edges: torch.Tensor, teacher_edges: torch.Tensor, weights: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """tau^2 * sum_a w_a * mean_sides KL(softmax(t_a,side / tau) || softmax(s_a,side / tau)) / sum_a w_a:
    localisation distillation of side distributions N x A x 4 x (R + 1) (logits), weights N x A."""
    log_s = F.log_softmax(student_edges.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_edges.float().detach() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1).mean(-1)  # N x A
    return temperature ** 2 * (weights * kl).sum() / weights.sum().clamp_min(1e-6)


def kd_weights(teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each location's weight in the dense KD terms (N x A): the teacher's foreground score (its
    best class score), 1 where the labels make the location positive."""
    k = teacher.shape[-1] - BOX_CHANNELS
    size = layout(teacher.shape[1])
    _, _, pos = assign(labels.float(), size, k)
    _, t_scores = decode(teacher.detach(), size)
    return torch.maximum(t_scores.max(-1).values, pos.float())


@torch.no_grad()
def pseudo_boxes(teacher: torch.Tensor, labels: torch.Tensor, score: float = PSEUDO_SCORE,
                 iou: float = PSEUDO_IOU, max_detections: int = 100) -> torch.Tensor:
    """The labels with the teacher's confident detections added that no labelled box covers
    (padded N x M' x 5)."""
    from torchvision.ops import box_iou

    boxes, scores = decode(teacher.float())
    rows = []
    for i in range(len(labels)):
        gt = labels[i][labels[i, :, 0] >= 0].float()
        b, s, c = select(boxes[i], scores[i], score, 0.5, max_detections)
        if len(gt) and len(b):
            new = box_iou(b, gt[:, 1:5]).max(1).values < iou
            b, c = b[new], c[new]
        rows.append(torch.cat([gt, torch.cat([c[:, None].float(), b], 1)]))
    m = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), m, 5), -1.0)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@KD_LOSSES.register("head", needs=frozenset({"detection"}))
def head_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """Dense head KD (detection): alpha * FCOS loss + (1 - alpha) * (tau^2 soft class maps + box and
    centre-ness imitation) on the teacher's foreground and the positives."""
    return head_kd_loss(b.student_logits, b.teacher_logits[0], b.labels, s.alpha, s.temperature)


@KD_LOSSES.register("ld", needs=frozenset({"detection", "edges"}))
def ld_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """LD (detection, GFL-style heads on both sides): L = tau^2 * sum_a w_a mean_sides KL(T_a/tau || S_a/tau)
    / sum_a w_a over the box-side distributions, w the teacher's foreground score (positives 1)."""
    if b.student_edges is None or b.teacher_edges is None:
        raise ConfigError("the ld KD term distils the box-side distributions of GFL-style heads: give the student "
                          "and the teacher --det-head gfl")
    if b.student_edges.shape != b.teacher_edges.shape:
        raise ConfigError(f"the ld KD term needs the student's and the teacher's side distributions on one layout "
                          f"(student {tuple(b.student_edges.shape)}, teacher {tuple(b.teacher_edges.shape)})")
    return ld_loss(b.student_edges, b.teacher_edges, kd_weights(b.teacher_logits[0], b.labels), s.temperature)


@KD_LOSSES.register("pseudo-box", needs=frozenset({"detection"}))
def pseudo_box_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """Pseudo-box KD (detection): L = FCOS(S, labels + the teacher's detections with score >= 0.5
    that no label covers, IoU < 0.5)."""
    return detection_loss(b.student_logits, pseudo_boxes(b.teacher_logits[0], b.labels))
