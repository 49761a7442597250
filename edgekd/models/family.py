"""EdgeNet: the parametric CNN family that teachers and students are drawn from.

stem conv3x3 -> 3 stages of inverted-residual blocks (MobileNetV2 style: 1x1 expand,
kxk depthwise, 1x1 project; residual when shapes match) -> global pool -> linear.
Stage widths are (24, 48, 96) x width; each stage has `depth` blocks, the first one strided.
The input is raw [0, 1] imagery; per-channel normalisation is a fixed first layer, so every
export takes the same input the user has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec

STAGE_CHANNELS = (24, 48, 96)


def _round_channels(c: float, divisor: int = 8) -> int:
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


class Normalize(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, kernel, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class EdgeNet(nn.Module):
    def __init__(self, arch: ArchSpec, in_channels: int, num_classes: int,
                 mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        self.arch = arch
        mean = mean if mean is not None else [0.0] * in_channels
        std = std if std is not None else [1.0] * in_channels
        self.normalize = Normalize(mean, std)
        widths = [_round_channels(c * arch.width) for c in STAGE_CHANNELS]
        self.stage_channels = widths
        self.stem = _conv_bn(in_channels, widths[0], 3)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []  # index of each stage's last block in `features`
        cin = widths[0]
        for cout, depth in zip(widths, arch.stage_depths):
            for i in range(depth):
                blocks.append(InvertedResidual(cin, cout, 2 if i == 0 else 1, arch.expansion, arch.kernel))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        self.embedding_dim = cin

    @property
    def name(self) -> str:
        return self.arch.name

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        r = self.arch.resolution
        if r is not None and (x.shape[-2] != r or x.shape[-1] != r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        return self.stem(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self._input(x))
        return self.classifier(torch.flatten(self.pool(x), 1))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(logits, the output of each stage, the pooled embedding) — what feature and relation
        distillation compare."""
        x = self._input(x)
        stages = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.stage_ends:
                stages.append(x)
        emb = torch.flatten(self.pool(x), 1)
        return self.classifier(emb), stages, emb


def build_model(arch: ArchSpec, in_channels: int, num_classes: int,
                mean: list[float] | None = None, std: list[float] | None = None) -> EdgeNet:
    return EdgeNet(arch, in_channels, num_classes, mean, std)
