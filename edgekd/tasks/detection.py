"""Object detection: boxes of classes on the ground (vehicles, ships, planes, storage tanks).

Labels are boxes padded to one tensor N x M x 5 of [class, x1, y1, x2, y2] in input pixels (class
-1 padding, -2 - c a crowd region of class c: edgekd.data.boxes). Outputs are a one-stage
detector's dense rows N x A x (K + 5) (edgekd.models.detnet); decoding and NMS turn them into
detections. The loss is FCOS's; the KD terms are `head` (dense head KD) and `pseudo-box`
(edgekd.distill.detection), and `feature` on the neck's levels.

The metric is COCO's, by pycocotools: mAP50 (the figure validation, selection and parity use),
mAP@[.5:.95], AP of small/medium/large objects and per class. The detections scored are those
above SCORE_FLOOR, at most MAX_DETECTIONS per image after class-wise NMS at NMS_IOU."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

from ..agreement import Parity
from ..data.store import Labels
from ..tolerances import ParityTolerance
from . import TASKS

SCORE_FLOOR = 0.05  # detections scored by the metric (COCO practice: a low floor, the curve decides)
NMS_IOU = 0.6
MAX_DETECTIONS = 100
EXPORT_SCORE = 0.25  # the exports' default threshold (a deployed detector reports the sure ones)
MATCH_IOU = 0.5  # parity: an export's detection matches PyTorch's at this IoU, same class
DETECTION_MAX_DROP = 0.01  # a lower precision passes parity within 1 mAP50 point of PyTorch


def detections(out: torch.Tensor, score: float = SCORE_FLOOR, iou: float = NMS_IOU,
               max_detections: int = MAX_DETECTIONS) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(boxes, scores, labels) per image of raw outputs."""
    from ..models.detnet import decode, select

    out_list = []
    for i in range(0, len(out), 16):
        boxes, scores = decode(out[i:i + 16].float())
        out_list += [select(b, s, score, iou, max_detections) for b, s in zip(boxes, scores)]
    return out_list


def coco_metrics(dets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], y: torch.Tensor, classes: list[str]
                 ) -> dict[str, Any]:
    """COCO's figures (pycocotools) of detections against padded labels: map, map50, map75,
    map_small/medium/large and per-class AP50 ('per_class'); -1 where nothing could be scored."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i in range(len(y)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for row in y[i][y[i, :, 0] != -1].tolist():
            c, crowd = (int(row[0]), 0) if row[0] >= 0 else (int(-2 - row[0]), 1)
            w, h = row[3] - row[1], row[4] - row[2]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [row[1], row[2], w, h],
                         "area": w * h, "iscrowd": crowd})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    res = [{"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
           for i, (bx, sc, lab) in enumerate(dets) for b, s, c in zip(bx.tolist(), sc.tolist(), lab.tolist())]
    empty = {"map": 0.0, "map50": 0.0, "map75": 0.0, "map_small": -1.0, "map_medium": -1.0, "map_large": -1.0,
             "per_class": [0.0] * len(classes)}
    if not anns or not res:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(res)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    prec = ev.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all recall levels, per class, all areas, 100 dets
    per = [float(prec[:, k][prec[:, k] > -1].mean()) if (prec[:, k] > -1).any() else -1.0 for k in range(len(classes))]
    return {"map": float(s[0]), "map50": float(s[1]), "map75": float(s[2]), "map_small": float(s[3]),
            "map_medium": float(s[4]), "map_large": float(s[5]), "per_class": per}


def flip_boxes(y: torch.Tensor, size: int, horizontal: bool) -> torch.Tensor:
    """Padded boxes of an image mirrored left-right (or top-bottom)."""
    out = y.clone()
    real = y[:, 0] != -1
    a, b = (1, 3) if horizontal else (2, 4)
    out[real, a], out[real, b] = size - y[real, b], size - y[real, a]
    return out


def rot90_boxes(y: torch.Tensor, size: int, k: int) -> torch.Tensor:
    """Padded boxes of an image turned as torch.rot90(img, k, dims=(-2, -1)) turns it (k quarter
    turns counter-clockwise)."""
    out = y.clone()
    real = y[:, 0] != -1
    for _ in range(k % 4):  # one counter-clockwise turn: (x, y) -> (y, size - x)
        x1, y1, x2, y2 = out[real, 1].clone(), out[real, 2].clone(), out[real, 3].clone(), out[real, 4].clone()
        out[real, 1], out[real, 2], out[real, 3], out[real, 4] = y1, size - x2, y2, size - x1
    return out


def crop_boxes(y: torch.Tensor, top: int, left: int, side: int, size: int, min_visible: float) -> torch.Tensor:
    """Padded boxes of a square crop resized back to `size`: clipped, those with less than
    `min_visible` of their area left become padding."""
    out = y.clone()
    real = y[:, 0] != -1
    b = y[:, 1:5] - torch.tensor([left, top, left, top], dtype=y.dtype)
    c = b.clamp(0, side)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    seen = (c[:, 2] - c[:, 0]).clamp_min(0) * (c[:, 3] - c[:, 1]).clamp_min(0)
    keep = real & (seen >= min_visible * area) & (seen > 0)
    out[:, 1:5] = c * (size / side)
    out[~keep] = -1.0
    return out


def merge(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, overlap: float = 0.5
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The detections of a frame's slices merged (SAHI's greedy non-maximum merging): by score,
    per class, a detection that overlaps a kept one by `overlap` of the smaller box's area
    (intersection over the smaller box: a part of an object cut by a slice edge lies inside the
    whole, with a small IoU) is merged into it, the kept box growing to the union of both."""
    kept_b: list[torch.Tensor] = []
    kept_s: list[float] = []
    kept_l: list[int] = []
    for i in scores.argsort(descending=True, stable=True).tolist():
        b, c = boxes[i], int(labels[i])
        for j, (kb, kc) in enumerate(zip(kept_b, kept_l)):
            if kc != c:
                continue
            inter = (torch.minimum(kb[2:], b[2:]) - torch.maximum(kb[:2], b[:2])).clamp_min(0).prod()
            smaller = torch.minimum((kb[2:] - kb[:2]).prod(), (b[2:] - b[:2]).prod()).clamp_min(1e-6)
            if float(inter / smaller) >= overlap:
                kept_b[j] = torch.cat([torch.minimum(kb[:2], b[:2]), torch.maximum(kb[2:], b[2:])])
                break
        else:
            kept_b.append(b.clone())
            kept_s.append(float(scores[i]))
            kept_l.append(c)
    if not kept_b:
        return boxes[:0], scores[:0], labels[:0]
    return torch.stack(kept_b), torch.tensor(kept_s), torch.tensor(kept_l, dtype=labels.dtype)


@torch.no_grad()
def predict_frame(model: torch.nn.Module, image: torch.Tensor, input_size: int, tile: int | None, overlap: int,
                  score: float = EXPORT_SCORE, iou: float = NMS_IOU, max_detections: int = MAX_DETECTIONS
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Detections on a camera frame of any size (C x H x W in [0, 1]), in its own pixels: each
    slice (the data loader's windows: `tile` px overlapping by `overlap`, or the whole frame) is
    letterboxed to the model's input, its detections mapped back and the slices merged (`merge`);
    the cost is about slices x one pass, plus the merge.
    Returns (boxes, scores, labels, slices)."""
    from ..data.boxes import letterbox, windows

    model.eval()
    found = []
    wins = windows(image.shape[-1], image.shape[-2], tile, overlap)
    for left, top, ww, wh in wins:
        crop, scale = letterbox(image[:, top:top + wh, left:left + ww].numpy(), input_size)
        (b, s, c), = detections(model(torch.from_numpy(crop)[None]), score, iou, max_detections)
        found.append((b / scale + torch.tensor([left, top, left, top], dtype=b.dtype), s, c))
    boxes, scores, labels = merge(torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found]),
                                  torch.cat([f[2] for f in found]))
    return boxes[:max_detections], scores[:max_detections], labels[:max_detections], len(wins)


class DetectionTask:
    name = "detection"
    metric = "mAP50"
    kd_terms = frozenset({"head", "pseudo-box", "feature", "ld"})
    default_kd: tuple[str, ...] = ("head",)

    def augment(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """flip, rot90 and scale-crop applied to each image and its boxes alike."""
        import torch.nn.functional as F

        from ..data.boxes import MIN_VISIBLE

        size = x.shape[-1]
        xs, ys = list(x), list(y)
        for i in range(len(xs)):
            if "flip" in kinds:
                if bool(torch.rand(1, generator=gen) < 0.5):
                    xs[i], ys[i] = xs[i].flip(-1), flip_boxes(ys[i], size, True)
                if bool(torch.rand(1, generator=gen) < 0.5):
                    xs[i], ys[i] = xs[i].flip(-2), flip_boxes(ys[i], size, False)
            if "rot90" in kinds:
                k = int(torch.randint(4, (1,), generator=gen))
                xs[i], ys[i] = torch.rot90(xs[i], k, dims=(-2, -1)), rot90_boxes(ys[i], size, k)
            if "crop" in kinds:
                side = max(8, int((float(torch.rand(1, generator=gen)) * 0.4 + 0.6) * size))
                top, left = (int(torch.randint(size - side + 1, (1,), generator=gen)) for _ in range(2))
                crop = xs[i][None, :, top:top + side, left:left + side]
                xs[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
                ys[i] = crop_boxes(ys[i], top, left, side, size, MIN_VISIBLE)
        return torch.stack(xs), torch.stack(ys)

    def view_labels(self, y: torch.Tensor, view: int) -> torch.Tensor:
        """Boxes as the teacher cache sees them: detection teachers are cached in one view, the
        images as they are (the run refuses --teacher-views > 1 for detection)."""
        if view == 0:
            return y
        raise ValueError("detection teachers are cached in one view (the images as they are)")

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from ..distill.detection import detection_loss

        return detection_loss(logits, y)

    def kd_rows(self, student: torch.Tensor, y: torch.Tensor, teachers: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The outputs as they are: the detection terms read whole images (assignment needs them)."""
        return student, y, teachers

    @torch.no_grad()
    def evaluate(self, logits: torch.Tensor, y: Labels, teacher_logits: torch.Tensor | None = None,
                 alpha: float = 0.5, temperature: float = 4.0, classes: list[str] | None = None) -> dict[str, float]:
        """mAP50 (as "accuracy": the task's metric), mAP@[.5:.95], the FCOS loss (as
        "cross_entropy") and, with teacher outputs, the head KD loss, per image."""
        from ..distill.detection import detection_loss, head_kd_loss

        yt = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
        k = logits.shape[-1] - 5
        m = coco_metrics(detections(logits), yt, classes or [str(c) for c in range(k)])
        loss = kd = 0.0
        for i in range(0, len(yt), 16):
            n = len(yt[i:i + 16])
            loss += float(detection_loss(logits[i:i + 16].float(), yt[i:i + 16])) * n
            if teacher_logits is not None:
                kd += float(head_kd_loss(logits[i:i + 16].float(), teacher_logits[i:i + 16].float(), yt[i:i + 16],
                                         alpha, temperature)) * n
        out = {"accuracy": m["map50"], "map50": m["map50"], "map": m["map"], "map75": m["map75"],
               "map_small": m["map_small"], "map_medium": m["map_medium"], "map_large": m["map_large"],
               "cross_entropy": loss / max(len(yt), 1)}
        if teacher_logits is not None:
            out["kd_loss"] = kd / max(len(yt), 1)
        return out

    def compare(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> Parity:
        """An export's detections against PyTorch's: the share of PyTorch's detections above
        EXPORT_SCORE the export finds (same class, IoU >= MATCH_IOU; as top1_agreement), mAP50 of
        each, the raw outputs' differences."""
        from torchvision.ops import box_iou

        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        non_finite = int((~np.isfinite(ref)).sum() + (~np.isfinite(got)).sum())
        r, g = torch.from_numpy(np.nan_to_num(ref)).float(), torch.from_numpy(np.nan_to_num(got)).float()
        y = torch.from_numpy(labels)
        k = [str(c) for c in range(r.shape[-1] - 5)]
        dr, dg = detections(r), detections(g)  # decoded once: the metric's and the matching's detections
        map_ref, map_got = coco_metrics(dr, y, k)["map50"], coco_metrics(dg, y, k)["map50"]
        found = total = 0
        for (rb, rs, rl), (gb, gs, gl) in zip(dr, dg):  # the sure ones (NMS is greedy by score: a filter after it)
            sure_r, sure_g = rs >= EXPORT_SCORE, gs >= EXPORT_SCORE
            rb, rl, gb, gl = rb[sure_r], rl[sure_r], gb[sure_g], gl[sure_g]
            total += len(rb)
            if len(rb) and len(gb):
                iou = box_iou(rb, gb) * (rl[:, None] == gl[None, :])
                found += int((iou.max(1).values >= MATCH_IOU).sum())
        return Parity(n=int(len(labels)), top1_agreement=found / total if total else 1.0, accuracy_torch=map_ref,
                      accuracy_export=map_got, accuracy_delta=map_got - map_ref, max_abs_diff=float(diff.max()),
                      mean_abs_diff=float(diff.mean()), non_finite=non_finite, metric="mAP50")

    def tolerances(self, configured: dict[str, ParityTolerance]) -> dict[str, ParityTolerance]:
        """Lower precisions within 1 mAP50 point unless the configuration says otherwise."""
        from ..tolerances import DEFAULT_TOLERANCES

        out = dict(configured)
        for precision in ("fp16", "int8"):
            tol = out.get(precision)
            if tol is not None and tol == DEFAULT_TOLERANCES[precision]:
                out[precision] = tol.model_copy(update={"max_accuracy_drop": DETECTION_MAX_DROP})
        return out


TASKS.register("detection")(DetectionTask())
