"""KD losses, registered by name, as plain functions of tensors (DESIGN.md section 1).

A training objective is a weighted sum of registered terms (`--kd response:1,feature:0.5`);
each term reads what it needs from a `KDInputs` batch."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

# -- the math, term by term ---------------------------------------------------------------

def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """tau^2 * KL(softmax(z_T/tau) || softmax(z_S/tau)), averaged over the batch; with `weights`,
    each sample's KL is weighted (dynamic distillation, see `sample_weights`)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    if weights is None:
        return temperature**2 * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    per_sample = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(1)
    return temperature**2 * (weights * per_sample).mean()


def history_loss(student_logits: torch.Tensor, previous_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_history(S_t, S_{t-1}) of an incremental update: the previous student's soft outputs
    distilled into the updated one over the previous student's classes (the first
    previous_logits.shape[1] outputs; classes added by the update have no history)."""
    return soft_kl(student_logits[:, :previous_logits.shape[1]], previous_logits, temperature)


WEIGHTINGS = ("none", "entropy", "disagreement")


def sample_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mode: str) -> torch.Tensor | None:
    """Dynamic distillation: a weight lambda(x) per sample, normalised so the batch mean is 1
    (detached: the weights steer the loss, they are not trained).

    - entropy: H(p_T(x)), the teacher's predictive entropy -- hard samples weigh more;
    - disagreement: 1/2 * sum_c |p_T(c|x) - p_S(c|x)|, the total-variation distance between the
      teacher's and the student's predictions -- what the student has not learnt yet weighs more.
    A batch whose raw weights are all zero gets weight 1 everywhere."""
    if mode == "none":
        return None
    p_t = F.softmax(teacher_logits.detach(), dim=1)
    if mode == "entropy":
        raw = -(p_t * torch.log(p_t.clamp_min(1e-12))).sum(1)
    elif mode == "disagreement":
        raw = 0.5 * (p_t - F.softmax(student_logits.detach(), dim=1)).abs().sum(1)
    else:
        raise ConfigError(f"KD weighting must be one of {', '.join(WEIGHTINGS)}, not {mode!r}")
    mean = raw.mean()
    return raw / mean if mean > 0 else torch.ones_like(raw)


def response_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     *, alpha: float, temperature: float, weighting: str = "none") -> torch.Tensor:
    """Hinton et al. soft-target loss, averaged over the batch:

    L_KD = alpha * CE(y, softmax(z_S)) + (1 - alpha) * tau^2 * mean_i lambda(x_i) KL_i(z_T/tau || z_S/tau)

    with lambda = 1 unless `weighting` names a dynamic weighting (`sample_weights`)."""
    w = sample_weights(student_logits, teacher_logits, weighting)
    return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * soft_kl(student_logits, teacher_logits,
                                                                                   temperature, w)


def multi_teacher_kd_loss(student_logits: torch.Tensor, teacher_logits: list[torch.Tensor], labels: torch.Tensor,
                          weights: list[float], *, alpha: float, temperature: float,
                          weighting: str = "none") -> torch.Tensor:
    """sum_i w_i * L_KD(T_i, S), the weights normalised to sum to 1."""
    norm = sum(weights)
    total = student_logits.new_zeros(())
    for w, t in zip(weights, teacher_logits):
        total = total + w / norm * response_kd_loss(student_logits, t, labels, alpha=alpha, temperature=temperature,
                                                    weighting=weighting)
    return total


def robust_weights(teacher_logits: torch.Tensor, labels: torch.Tensor, rho: float) -> torch.Tensor:
    """Per-sample weight of the label term: w_i = min(1, p_T(y_i) / rho).

    A label the teacher finds plausible (probability >= rho) keeps full weight; a label the
    teacher strongly disagrees with is down-weighted in proportion to the teacher's belief in it."""
    p_label = F.softmax(teacher_logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    return torch.clamp(p_label / rho, max=1.0)


def robust_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   *, alpha: float, temperature: float, rho: float = 0.5) -> torch.Tensor:
    """alpha * mean_i(w_i * CE_i) + (1 - alpha) * tau^2 * KL, with w from `robust_weights`."""
    w = robust_weights(teacher_logits, labels, rho).detach()
    ce = F.cross_entropy(student_logits, labels, reduction="none")
    return alpha * (w * ce).mean() + (1 - alpha) * soft_kl(student_logits, teacher_logits, temperature)


def attention_map(t: torch.Tensor) -> torch.Tensor:
    """Where the teacher's features matter (attention transfer, Zagoruyko & Komodakis): the mean
    of the squared activations over channels, per position, normalised per sample to mean 1."""
    a = t.detach().pow(2).mean(1)  # (N, H, W)
    mean = a.flatten(1).mean(1).clamp_min(1e-12)
    return a / mean[:, None, None]


def box_mask(boxes: torch.Tensor, size: tuple[int, int], image_size: int) -> torch.Tensor:
    """FGD's foreground/background weighting of a map (N, H, W) from the labels' boxes (N x M x 5
    in input pixels): foreground positions (inside a box) share weight 1/2 equally, background
    positions the other 1/2, per image, so a few small objects weigh as much as the large
    background (an image without boxes: background only, weight 1 in all)."""
    n = boxes.shape[0]
    h, w = size
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * image_size / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * image_size / w
    fg = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        for c, x1, y1, x2, y2 in boxes[i].tolist():
            if c >= 0:
                fg[i] |= ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]
    n_fg = fg.flatten(1).sum(1).clamp_min(1).float()[:, None, None]
    n_bg = (~fg).flatten(1).sum(1).clamp_min(1).float()[:, None, None]
    has = fg.flatten(1).any(1)[:, None, None]
    out = torch.where(fg, 0.5 / n_fg, torch.where(has, 0.5 / n_bg, 1.0 / n_bg))
    return out * h * w  # mean 1 over the map: the term's scale is that of the plain distance


def feature_kd_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor], adapters: nn.ModuleList,
                    weights: list[float] | None = None, distance: str = "mse",
                    importance: str = "none", boxes: torch.Tensor | None = None,
                    image_size: int | None = None, temperature: float = 1.0) -> torch.Tensor:
    """sum_l w_l * D(adapter_l(S_l), T_l): a 1x1 adapter maps student channels to teacher channels,
    then the result is resized (bilinear) to the teacher map's size. D per position is the
    squared error (mse), the absolute error (l1: feature-importance preservation, sum_i
    |f_i^T - f_i^S| averaged) or 1 - cosine similarity over channels; averaged over positions,
    each weighted by the teacher's attention map when `importance` is "attention", or (detection)
    by FGD's foreground/background split of the labels' `boxes` when it is "boxes" (`box_mask`).
    "cwd" is channel-wise distillation of the maps instead (`channel_wise_kd_loss` at
    `temperature`: each channel a distribution over positions; no position weighting)."""
    weights = weights or [1.0] * len(student_feats)
    total = student_feats[0].new_zeros(())
    for w, s, t, adapter in zip(weights, student_feats, teacher_feats, adapters):
        a = adapter(s)
        if a.shape[-2:] != t.shape[-2:]:
            a = F.interpolate(a, size=t.shape[-2:], mode="bilinear", align_corners=False)
        if distance == "cwd":
            if importance != "none":
                raise ConfigError("the cwd feature distance weighs no positions: leave the feature importance at none")
            total = total + w * channel_wise_kd_loss(a, t, temperature)
            continue
        if distance == "mse":
            d = (a - t).pow(2).mean(1)  # (N, H, W)
        elif distance == "l1":
            d = (a - t).abs().mean(1)
        elif distance == "cosine":
            d = 1 - F.cosine_similarity(a, t, dim=1)
        else:
            raise ConfigError(f"feature distance must be mse, l1, cosine or cwd, not {distance!r}")
        if importance == "attention":
            d = d * attention_map(t)
        elif importance == "boxes":
            if boxes is None or boxes.dim() != 3 or image_size is None:
                raise ConfigError("--feature-importance boxes weighs feature maps by the labels' boxes: use it with "
                                  "--task detection")
            d = d * box_mask(boxes, (d.shape[-2], d.shape[-1]), image_size)
        elif importance != "none":
            raise ConfigError(f"feature importance must be none, attention or boxes, not {importance!r}")
        total = total + w * d.mean()
    return total


def channel_wise_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Channel-wise distillation (Shu et al., ICCV 2021) of dense maps (N, C, H, W):

    tau^2 / (N * C) * sum_{n,c} KL(softmax_HW(T_nc / tau) || softmax_HW(S_nc / tau))

    each channel turned into a distribution over spatial positions; the student's map is resized
    (bilinear) to the teacher's when their sizes differ."""
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    n, c = student.shape[:2]
    log_s = F.log_softmax(student.reshape(n * c, -1) / temperature, dim=1)
    log_t = F.log_softmax(teacher.reshape(n * c, -1).to(student.dtype) / temperature, dim=1)
    return temperature**2 * F.kl_div(log_s, log_t, reduction="sum", log_target=True) / (n * c)


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e)
    mean = d[d > 0].mean() if (d > 0).any() else d.new_ones(())
    return d / mean


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2))  # [i, j, k] = cos of the angle at i between j and k


def relation_kd_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, *, w_distance: float = 1.0,
                     w_angle: float = 2.0) -> torch.Tensor:
    """Relational KD (Park et al. 2019): Huber loss between the students' and the teachers'
    mean-normalised pairwise distances, plus between the angles of every triplet in the batch."""
    dist = F.smooth_l1_loss(_pairwise_distances(student_emb), _pairwise_distances(teacher_emb))
    angle = F.smooth_l1_loss(_angles(student_emb), _angles(teacher_emb))
    return w_distance * dist + w_angle * angle


# -- terms of a training objective ---------------------------------------------------------

@dataclass
class KDInputs:
    """One batch as the KD terms see it. Teacher tensors come from the teacher-output cache."""

    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: list[torch.Tensor]  # one per teacher; the first is the main teacher
    student_feats: list[torch.Tensor] = field(default_factory=list)
    teacher_feats: list[torch.Tensor] = field(default_factory=list)
    student_emb: torch.Tensor | None = None
    teacher_emb: torch.Tensor | None = None
    adapters: nn.ModuleList | None = None
    unlabeled_student_logits: torch.Tensor | None = None
    unlabeled_teacher_logits: torch.Tensor | None = None
    # dense tasks: the logit maps (N, K, h, w) before they become rows of valid pixels
    student_dense: torch.Tensor | None = None
    teacher_dense: torch.Tensor | None = None
    # detection with GFL-style heads: each location's side distributions (N, A, 4, R + 1), as logits
    student_edges: torch.Tensor | None = None
    teacher_edges: torch.Tensor | None = None


@dataclass(frozen=True)
class KDSettings:
    alpha: float = 0.5
    temperature: float = 4.0
    teacher_weights: tuple[float, ...] = (1.0,)
    robust_rho: float = 0.5
    feature_distance: str = "mse"
    semi_alpha: float = 0.5  # weight of the labelled part in the semi-supervised term
    weighting: str = "none"  # dynamic distillation: per-sample lambda(x) of the soft-target terms
    feature_importance: str = "none"  # "attention": weight feature distances by the teacher's attention


KDTermFn = Callable[[KDInputs, KDSettings], torch.Tensor]
# a term's metadata: needs = what its batch must carry ("features", "embedding", "unlabeled", "teachers",
# "dense", "edges"; "detection": a detection term)
KD_LOSSES: Registry[KDTermFn] = Registry("KD loss")


@KD_LOSSES.register("response", needs=frozenset())
def response_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """Hinton et al.: alpha * CE(y, softmax(z_S)) + (1 - alpha) * tau^2 * KL(softmax(z_T/tau) || softmax(z_S/tau))."""
    return response_kd_loss(b.student_logits, b.teacher_logits[0], b.labels, alpha=s.alpha, temperature=s.temperature,
                            weighting=s.weighting)


@KD_LOSSES.register("feature", needs=frozenset({"features"}))
def feature_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """FitNets-style hints: sum_l D(adapter_l(S_l), T_l), D = MSE, L1, 1 - cosine or CWD, 1x1 adapters."""
    if b.adapters is None:
        raise ConfigError("the feature KD term needs adapters from the trainer")
    boxes = b.labels if s.feature_importance == "boxes" else None
    size = None
    if boxes is not None and b.student_logits.dim() == 3:  # detector rows: the input size they came from
        from ..models.detnet import layout

        size = layout(b.student_logits.shape[1])
    return feature_kd_loss(b.student_feats, b.teacher_feats, b.adapters, distance=s.feature_distance,
                           importance=s.feature_importance, boxes=boxes, image_size=size,
                           temperature=s.temperature)


@KD_LOSSES.register("relation", needs=frozenset({"embedding"}))
def relation_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """RKD (Park et al. 2019): Huber(psi_D(S), psi_D(T)) + 2 * Huber(psi_A(S), psi_A(T)) over the batch."""
    if b.student_emb is None or b.teacher_emb is None:
        raise ConfigError("the relation KD term needs embeddings of the student and the teacher")
    return relation_kd_loss(b.student_emb, b.teacher_emb)


@KD_LOSSES.register("multi-teacher", needs=frozenset({"teachers"}))
def multi_teacher_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """sum_i (w_i / sum_j w_j) * L_KD(T_i, S): the response loss against each teacher, weighted."""
    return multi_teacher_kd_loss(b.student_logits, b.teacher_logits, b.labels, list(s.teacher_weights),
                                 alpha=s.alpha, temperature=s.temperature, weighting=s.weighting)


@KD_LOSSES.register("robust", needs=frozenset())
def robust_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """alpha * mean_i(w_i * CE_i) + (1 - alpha) * tau^2 * KL, w_i = min(1, p_T(y_i) / rho)."""
    return robust_kd_loss(b.student_logits, b.teacher_logits[0], b.labels, alpha=s.alpha, temperature=s.temperature,
                          rho=s.robust_rho)


@KD_LOSSES.register("semi-supervised", needs=frozenset({"unlabeled"}))
def semi_supervised_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """beta * L_KD(labelled) + (1 - beta) * tau^2 * KL(T || S) on unlabelled images, beta = semi_alpha."""
    if b.unlabeled_student_logits is None or b.unlabeled_teacher_logits is None:
        raise ConfigError("the semi-supervised KD term needs unlabelled images (--unlabeled DIR)")
    return (s.semi_alpha * response_kd_loss(b.student_logits, b.teacher_logits[0], b.labels, alpha=s.alpha,
                                            temperature=s.temperature)
            + (1 - s.semi_alpha) * soft_kl(b.unlabeled_student_logits, b.unlabeled_teacher_logits, s.temperature))


@KD_LOSSES.register("cwd", needs=frozenset({"dense"}))
def cwd_term(b: KDInputs, s: KDSettings) -> torch.Tensor:
    """CWD (Shu et al. 2021): tau^2 / (N*C) * sum_{n,c} KL(softmax_HW(T_nc/tau) || softmax_HW(S_nc/tau))."""
    if b.student_dense is None or b.teacher_dense is None:
        raise ConfigError("the cwd KD term compares dense logit maps: use it with --task segmentation")
    return channel_wise_kd_loss(b.student_dense, b.teacher_dense, s.temperature)


def parse_kd(spec: str | list[str]) -> list[tuple[str, float]]:
    """'response:1,feature:0.5' -> [("response", 1.0), ("feature", 0.5)]; a missing weight is 1."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in (i.strip() for i in items if i.strip()):
        name, _, w = item.partition(":")
        KD_LOSSES.get(name)  # unknown names fail here, naming the choices
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ConfigError(f"--kd weight {w!r} of {name} is not a number; write e.g. --kd "
                              "response:1,feature:0.5") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"--kd weight {w} of {name} must be a finite number >= 0; write e.g. --kd "
                              "response:1,feature:0.5")
        out.append((name, weight))
    if not out:
        raise ConfigError("--kd names no loss; write e.g. --kd response or --kd response:1,relation:0.5")
    return out


def combined_loss(terms: list[tuple[str, float]], batch: KDInputs, settings: KDSettings) -> torch.Tensor:
    """sum_k weight_k * term_k(batch): the training objective of `--kd name:weight,...`."""
    total = batch.student_logits.new_zeros(())
    for name, w in terms:
        total = total + w * KD_LOSSES.get(name)(batch, settings)
    return total


def needs(terms: list[tuple[str, float]]) -> frozenset[str]:
    out: set[str] = set()
    for name, _ in terms:
        out |= KD_LOSSES.meta(name)["needs"]
    return frozenset(out)


from . import detection  # noqa: E402,F401  (registers the detection terms: head, pseudo-box)
