"""Segmentation models: an encoder's feature pyramid under edgekd's light FPN decoder, and
the segmenters of other libraries (torchvision's LRASPP / DeepLabV3 / FCN, segmentation_models_pytorch).

    encoder (EdgeNet stages, or a timm backbone with features_only)
      -> features at strides >= 4 -> 1x1 laterals to D channels, top-down sum (FPN)
      -> 3x3 conv-BN-ReLU -> 1x1 classifier: logits N x K x H/s x W/s, s = the finest stride used

Every model here takes normalised images (`ExternalNet` puts the normalisation in front) and
returns logits at its output stride; the task upsamples them to the mask size for the loss and
the metric. `dense_features` gives (logits, encoder feature maps) for feature and channel-wise
distillation. Each is rebuilt from its `source` record (no pickled code in a checkpoint)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from .arch import ArchSpec
from .family import EdgeNet

MIN_STRIDE = 4  # the decoder reads features at strides >= 4: the logits' stride is 4 (or coarser)
DECODER_CHANNELS = 64
TORCHVISION_SEGMENTERS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50",
                          "deeplabv3_resnet101", "fcn_resnet50", "fcn_resnet101")
SMP_ARCHS = ("Unet", "FPN", "DeepLabV3Plus", "DeepLabV3", "Linknet", "PSPNet", "UnetPlusPlus", "PAN", "MAnet")


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class EdgeNetEncoder(nn.Module):
    """The stages of an EdgeNet (no pool, no classifier) behind a stride-2 stem: one feature map
    per stage, at strides 4, 8, 16. (The classifier's stride-1 stem would run its first stage at
    half the input size: measured 1.6x the teacher's latency at 64 px for w1-d2, where a dense
    head needs no more than stride 4.)"""

    def __init__(self, arch: ArchSpec, in_channels: int):
        super().__init__()
        net = EdgeNet(arch, in_channels, 1)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, net.stage_channels[0], 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(net.stage_channels[0]), nn.ReLU6(inplace=True))
        self.features, self.stage_ends = net.features, list(net.stage_ends)
        self.channels = list(net.stage_channels)
        self.strides = [4, 8, 16]  # stride-2 stem, each stage halves

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.stage_ends:
                out.append(x)
        return out


class LightFPN(nn.Module):
    """FPN decoder: laterals to `width` channels, top-down sum, one 3x3 conv, a 1x1 classifier."""

    def __init__(self, channels: list[int], num_classes: int, width: int = DECODER_CHANNELS):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = _conv_bn_relu(width, width, 3)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        p = self.laterals[-1](feats[-1])
        for lateral, f in zip(reversed(self.laterals[:-1]), reversed(feats[:-1])):
            p = F.interpolate(p, size=f.shape[-2:], mode="bilinear", align_corners=False) + lateral(f)
        return self.fuse(p)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.decode(feats))


class SegModel(nn.Module):
    """An encoder's features at strides >= 4 under `LightFPN`."""

    def __init__(self, encoder: nn.Module, channels: list[int], strides: list[int], num_classes: int,
                 width: int = DECODER_CHANNELS):
        super().__init__()
        keep = [i for i, s in enumerate(strides) if s >= MIN_STRIDE]
        self.encoder, self.keep = encoder, keep
        self.output_stride = strides[keep[0]]
        self.decoder = LightFPN([channels[i] for i in keep], num_classes, width)

    def dense_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, the encoder's feature maps the decoder reads)."""
        feats = self.encoder(x)
        used = [feats[i] for i in self.keep]
        return self.decoder(used), used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_features(x)[0]


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation model returning its `out` logits (at the input size)."""

    output_stride = 1

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)["out"]


class SmpSegmenter(nn.Module):
    """A segmentation_models_pytorch model (logits at the input size); `dense_features` reads
    its encoder's pyramid too."""

    output_stride = 1

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def dense_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inner: Any = self.inner
        feats = inner.encoder(x)
        out = inner.segmentation_head(inner.decoder(feats))  # smp 0.6: the decoder takes the list
        return out, [f for f in feats[1:] if f.dim() == 4 and f.shape[1] > 0][-3:]


def timm_encoder(name: str, in_channels: int, full: nn.Module | None = None) -> tuple[nn.Module, list[int], list[int]]:
    """(timm backbone with features_only, channels, strides); with `full` (the classifier model
    holding pretrained weights), its weights are copied in, and every encoder tensor must be found."""
    import timm

    try:
        enc = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_channels)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ConfigError(f"timm:{name} cannot serve as a segmentation backbone (no features_only: {exc}); "
                          "choose a convolutional timm model, e.g. timm:efficientnet_lite0 or "
                          "timm:mobilenetv3_large_100") from None
    if full is not None:
        res = enc.load_state_dict(full.state_dict(), strict=False)
        if res.missing_keys:
            raise CheckpointError(f"pretrained weights of timm:{name} do not cover its encoder ({res.missing_keys[0]} "
                                  "missing)")
    info: Any = enc.feature_info
    return enc, list(info.channels()), list(info.reduction())


def build_segmenter(source: dict[str, Any], full: nn.Module | None = None) -> nn.Module:
    """The structure of a segmentation model from its source record (weights: `full` for a timm
    encoder's pretrained start, or a checkpoint loaded afterwards)."""
    kind, c, k = source["kind"], int(source["in_channels"]), int(source["num_classes"])
    if kind == "seg" and source["encoder"] == "edgenet":
        arch = ArchSpec.model_validate(source["arch"])
        enc: nn.Module = EdgeNetEncoder(arch, c)
        return SegModel(enc, list(enc.channels), list(enc.strides), k)  # type: ignore[arg-type]
    if kind == "seg" and source["encoder"] == "timm":
        enc, channels, strides = timm_encoder(source["name"], c, full)
        return SegModel(enc, channels, strides, k)
    if kind == "torchvision-seg":
        return TorchvisionSegmenter(torchvision_segmenter(source["name"], c, k))
    if kind == "smp":
        return SmpSegmenter(smp_model(source["name"], c, k))
    raise CheckpointError(f"unknown segmentation model source {kind!r}")


def torchvision_segmenter(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A torchvision segmentation model for the data's bands and classes, without weights (none
    are here offline; nothing is downloaded)."""
    import torchvision

    from .pretrained import set_in_channels

    if name not in TORCHVISION_SEGMENTERS:
        from ..registry import close_matches

        raise ConfigError(f"torchvision:{name} is not a segmentation model edgekd builds; "
                          f"{close_matches(name, TORCHVISION_SEGMENTERS)}choose one of "
                          f"{', '.join(TORCHVISION_SEGMENTERS)}")
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if not name.startswith("lraspp"):
        kwargs["aux_loss"] = False
    inner = torchvision.models.get_model(name, **kwargs)
    set_in_channels(inner, in_channels)
    return inner


def parse_smp(name: str) -> tuple[str, str]:
    """'Unet:tu-efficientnet_lite0' -> ('Unet', 'tu-efficientnet_lite0'), checked."""
    arch, sep, encoder = name.partition(":")
    if not sep or not encoder:
        raise ConfigError(f"smp:{name}: write smp:ARCH:ENCODER, e.g. smp:Unet:tu-efficientnet_lite0")
    if arch not in SMP_ARCHS:
        from ..registry import close_matches

        raise ConfigError(f"smp:{name}: {arch!r} is not a segmentation_models_pytorch architecture; "
                          f"{close_matches(arch, SMP_ARCHS)}choose one of {', '.join(SMP_ARCHS)}")
    return arch, encoder


def smp_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise ConfigError("smp: teachers need segmentation_models_pytorch; run pip install "
                          "'segmentation-models-pytorch>=0.6,<0.7'") from None
    arch, encoder = parse_smp(name)
    try:
        return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                                classes=num_classes)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"smp:{name} cannot be built ({str(exc).splitlines()[0][:160]}); name an encoder smp "
                          "knows, e.g. tu-efficientnet_lite0 or resnet18") from None


def load_smp_encoder_weights(model: nn.Module, encoder: str, full: nn.Module) -> bool:
    """Pretrained timm weights (`full`) into an smp model's `tu-` encoder; False when it has none."""
    inner: Any = getattr(model, "inner", model)
    target = getattr(getattr(inner, "encoder", None), "model", None)
    if not encoder.startswith("tu-") or target is None:
        return False
    res = target.load_state_dict(full.state_dict(), strict=False)
    if res.missing_keys:
        raise CheckpointError(f"pretrained weights of {encoder} do not cover the smp encoder ({res.missing_keys[0]})")
    return True
