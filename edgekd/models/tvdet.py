"""torchvision's detectors (FCOS, RetinaNet, SSD/SSDLite, Faster R-CNN) as edgekd teachers: built
with a new head for the data's classes, fine-tuned on the data with torchvision's own losses
(`own_loss`: the trainer calls it in place of the task's loss), and known to the rest of edgekd by
their detections (`boxes_only`: encoded as detector rows, so they teach by pseudo-boxes).

Images reach them letterboxed to the data's size and in [0, 1]; torchvision's transform
normalises them (ImageNet statistics, what its weights expect) and, set to that size, does not
resize them (SSD and SSDLite keep their fixed input, 300 and 320 px: boxes are mapped back)."""

from __future__ import annotations

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


def check_bands(name: str, in_channels: int) -> None:
    if in_channels != 3:
        raise ConfigError(f"torchvision:{name} takes RGB images and the data has {in_channels} bands; use a "
                          "timm:NAME teacher (edgekd adapts its stem to the bands)")


class _Deployable(nn.Module):
    """A torchvision detector as deployed: one image (batch 1) in [0, 1] in; `boxes`, `scores` and
    `labels` (the data's class indices) out, its transform, decoding and NMS inside."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.net(list(x))[0]
        return d["boxes"], d["scores"], d["labels"] - 1


def export_onnx(det: TorchvisionDetector, path: Path, input_shape: list[int]) -> Path:
    """The detector's deployable graph (torchvision's own ONNX export: tracing, batch 1)."""
    import contextlib
    import io
    import warnings

    from ..errors import ExportError
    from ..files import first_line

    det.eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # tracing warnings of torchvision's data-dependent code
            torch.onnx.export(_Deployable(det.net).eval(), (torch.zeros([1, *input_shape[1:]]),), str(path),
                              dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["boxes", "scores", "labels"])
    except Exception as exc:  # the exporter raises many types for operators it cannot write
        raise ExportError(f"torchvision:{det.name} cannot be exported to ONNX ({type(exc).__name__}: "
                          f"{first_line(exc, 120)})") from None
    return path
