"""torchvision's detectors (FCOS, RetinaNet, SSD/SSDLite, Faster R-CNN) as edgekd teachers: built
with a new head for the data's classes, fine-tuned on the data with torchvision's own losses
(`own_loss`: the trainer calls it in place of the task's loss), and known to the rest of edgekd by
their detections (`boxes_only`: encoded as detector rows, so they teach by pseudo-boxes).

Images reach them letterboxed to the data's size and in [0, 1]; torchvision's transform
normalises them (ImageNet statistics, what its weights expect) and, set to that size, does not
resize them (SSD and SSDLite keep their fixed input, 300 and 320 px: boxes are mapped back)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .detnet import encode

FIXED_SIZE = ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large")  # their builders fix the input size


def detector_names() -> list[str]:
    """torchvision's box detectors (mask and keypoint R-CNNs need labels edgekd does not read)."""
    import torchvision

    return [n for n in torchvision.models.list_models(module=torchvision.models.detection)
            if not n.startswith(("maskrcnn", "keypointrcnn"))]


class TorchvisionDetector(nn.Module):
    """A torchvision detector for K classes (its class 0 is the background: the data's class c
    is its label c + 1). Forward: per image its detections encoded as detector rows (N x A x
    (K + 5), edgekd.models.detnet.encode); `own_loss(x, y)`: the sum of torchvision's losses
    against edgekd's box labels (N x M x 5 of [class, x1, y1, x2, y2], padding and crowd rows
    left out)."""

    boxes_only = True

    def __init__(self, name: str, num_classes: int, image_size: int):
        super().__init__()
        import torchvision

        if name not in detector_names():
            from ..registry import close_matches

            raise ConfigError(f"torchvision has no box detector {name!r}; "
                              f"{close_matches(name, detector_names())}choose one of {', '.join(detector_names())}")
        size = {} if name in FIXED_SIZE else {"min_size": image_size, "max_size": image_size}
        self.net = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                                num_classes=num_classes + 1, **size)
        self.name, self.num_classes, self.image_size = name, num_classes, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        was = self.training
        self.net.eval()  # detections, also while the trainer holds the wrapper in train mode
        with torch.no_grad():
            out = self.net(list(x))
        self.net.train(was)
        return torch.stack([encode(d["boxes"].float(), d["scores"].float(), d["labels"].long() - 1, x.shape[-1],
                                   self.num_classes) for d in out])

    def own_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.net.train()
        targets = []
        for rows in y:
            keep = rows[:, 0] >= 0  # padding (-1) and crowd regions (-2 - c) are no targets
            targets.append({"boxes": rows[keep, 1:5].float(), "labels": rows[keep, 0].long() + 1})
        losses = self.net(list(x), targets)
        return sum(losses.values(), torch.zeros(()))

    def calibration_forward(self, x: torch.Tensor) -> None:
        """The backbone and the dense head in train mode without targets (torchvision's training
        needs them; its BatchNorm statistics do not): what BatchNorm recalibration runs. Faster
        R-CNN's region heads hold no BatchNorm."""
        images, _ = self.net.transform(list(x))
        feats = self.net.backbone(images.tensors)
        feats = list(feats.values()) if isinstance(feats, dict) else [feats]
        head = getattr(self.net, "head", None)  # FCOS, RetinaNet, SSD
        if head is not None:
            head(feats)

    def deployable_onnx(self, path: Path, input_shape: list[int], metadata: dict[str, str] | None = None) -> Path:
        """This detector as deployed (batch 1: its transform, network, decoding and NMS; outputs
        boxes, scores, labels, the data's class indices): what edgekd measures and ships of a
        torchvision detector. The metadata records its thresholds."""
        score, iou, most = self.current_thresholds()
        return export_onnx(self, path, input_shape, {
            "outputs": "boxes D x 4 (x1 y1 x2 y2, input pixels), scores D, labels D (class index)",
            **(metadata or {}), "score_threshold": f"{score:g}", "iou_threshold": f"{iou:g}",
            "max_detections": str(most)})

    def current_thresholds(self) -> tuple[float, float, int]:
        """(score threshold, NMS IoU threshold, max detections) of its postprocessing."""
        net: Any = self.net
        heads = getattr(net, "roi_heads", net)  # Faster R-CNN keeps them in its box head
        return float(heads.score_thresh), float(heads.nms_thresh), int(heads.detections_per_img)

    @contextlib.contextmanager
    def thresholds(self, score: float, iou: float, max_detections: int) -> Iterator[None]:
        """Its postprocessing at these thresholds for the duration (a deployed detector reports
        the sure ones; mAP is measured at torchvision's own low threshold)."""
        heads: Any = getattr(self.net, "roi_heads", self.net)
        saved = self.current_thresholds()
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = score, iou, max_detections
        try:
            yield
        finally:
            heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved

    @torch.no_grad()
    def detect(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes, scores and labels (the data's class indices) of one image (batch 1), as the
        deployable graph gives them."""
        self.net.eval()
        return _Deployable(self.net)(x)

    def load_weights(self, path: Path) -> str:
        """Load a state dict of this detector (a torchvision checkpoint, e.g. COCO's): every tensor
        whose name and shape match; the class layers of another class count stay new. Returns
        what was loaded, for the log."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for files that are not checkpoints
            raise CheckpointError(f"{path} cannot be read as a torchvision state dict ({type(exc).__name__}); "
                                  "give the .pth file of this detector's weights") from None
        state = state.get("model", state) if isinstance(state, dict) else state
        own = self.net.state_dict()
        fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not fit:
            raise CheckpointError(f"{path} holds no weights of torchvision:{self.name}: give this detector's "
                                  "checkpoint (its tensor names and shapes)")
        self.net.load_state_dict(fit, strict=False)
        new = len(own) - len(fit)
        return f"weights from {path.name}" + (f" ({new} tensors new for the data's classes)" if new else "")


def source_record(name: str, in_channels: int, num_classes: int, image_size: int) -> dict[str, Any]:
    return {"kind": "torchvision-det", "name": name, "in_channels": in_channels, "num_classes": num_classes,
            "image_size": image_size}


def check_bands(name: str, in_channels: int, role: str = "teacher") -> None:
    if in_channels != 3:
        raise ConfigError(f"torchvision:{name} takes RGB images and the data has {in_channels} bands; use a "
                          f"timm:NAME {role} (edgekd adapts its stem to the bands)"
                          + (" or edgenet, or leave it out" if role == "student" else ""))


class _Deployable(nn.Module):
    """A torchvision detector as deployed: one image (batch 1) in [0, 1] in; `boxes`, `scores` and
    `labels` (the data's class indices) out, its transform, decoding and NMS inside."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.net(list(x))[0]
        return d["boxes"], d["scores"], d["labels"] - 1


def export_onnx(det: TorchvisionDetector, path: Path, input_shape: list[int],
                metadata: dict[str, str] | None = None) -> Path:
    """The detector's deployable graph (torchvision's own ONNX export: tracing, batch 1), with
    `metadata` in its metadata_props; complete at `path` or absent."""
    import contextlib
    import io
    import warnings

    import onnx

    from ..errors import ExportError
    from ..files import first_line

    det.eval()
    tmp = path.with_suffix(".tmp.onnx")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # tracing warnings of torchvision's data-dependent code
            torch.onnx.export(_Deployable(det.net).eval(), (torch.zeros([1, *input_shape[1:]]),), str(tmp),
                              dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["boxes", "scores", "labels"],
                              dynamic_axes={n: {0: "detections"} for n in ("boxes", "scores", "labels")})
        if metadata:
            proto = onnx.load(str(tmp))
            for key, value in metadata.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, str(tmp))
        tmp.replace(path)
    except Exception as exc:  # the exporter raises many types for operators it cannot write
        raise ExportError(f"torchvision:{det.name} cannot be exported to ONNX ({type(exc).__name__}: "
                          f"{first_line(exc, 120)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
