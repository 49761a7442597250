"""Models from outside edgekd's family (timm, torchvision, TorchScript, torch.export, a user's
factory) behind the contract EdgeNet keeps: raw [0, 1] NCHW images in, logits out, the
normalisation inside the model (so every export takes raw images), and `forward_features`
giving (logits, stage feature maps, pooled embedding) for feature and relation distillation.

Stage features come from timm's `forward_intermediates` where the model has it, else from
forward hooks on named modules (`feature_modules`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .family import Normalize


class ExternalNet(nn.Module):
    """`inner` (a model that expects normalised input) with `Normalize(mean, std)` in front.
    `source` says how to rebuild it ({"kind": "timm", "name": ..., ...}); checkpoints store it."""

    def __init__(self, inner: nn.Module, mean: list[float], std: list[float], source: dict[str, Any],
                 feature_modules: list[str] | None = None):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.inner = inner
        self.source = dict(source)
        self.feature_modules = list(feature_modules or [])
        self.resolution = source.get("resolution")  # the network runs at this size (resized inside)
        self._stage_channels: list[int] | None = None

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        r = self.resolution
        if r and (x.shape[-2] != r or x.shape[-1] != r):
            x = F.interpolate(x, size=(int(r), int(r)), mode="bilinear", align_corners=False)
        return x

    @property
    def name(self) -> str:
        kind = self.source["kind"]
        if kind == "seg":  # a backbone under edgekd's light FPN decoder
            return f"{self.source['encoder']}:{self.source['name']}+fpn"
        if kind == "det":  # a backbone under edgekd's FPN neck and FCOS head
            return f"{self.source['encoder']}:{self.source['name']}+fcos"
        return f"{'torchvision' if kind in ('torchvision-seg', 'torchvision-det') else kind}:{self.source['name']}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(self._input(x))
        if isinstance(out, dict):  # torchvision segmenters: {"out": logits, ...}
            return out["out"]
        return out[0] if isinstance(out, (tuple, list)) else out

    @property
    def has_features(self) -> bool:
        if self.source.get("kind") == "from-teacher":  # a cut copy of the teacher reads its stages as the teacher
            return bool(getattr(self.inner, "has_features", hasattr(self.inner, "forward_features")))
        return (hasattr(self.inner, "forward_intermediates") or hasattr(self.inner, "dense_features")
                or bool(self.feature_modules))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(logits, stage feature maps, pooled embedding)."""
        x = self._input(x)
        inner: Any = self.inner
        if self.source.get("kind") == "from-teacher":  # the teacher's structure, cut: its own stages, fewer channels
            return inner.forward_features(x)
        if hasattr(inner, "dense_features"):  # segmenters: (logits, encoder feature maps)
            logits, stages = inner.dense_features(x)
            return logits, stages, stages[-1].mean(dim=(2, 3))
        if hasattr(inner, "forward_intermediates") and hasattr(inner, "forward_head"):
            final, stages = inner.forward_intermediates(x)
            emb = inner.forward_head(final, pre_logits=True)
            return inner.forward_head(final), [s for s in stages if s.dim() == 4], emb.flatten(1)
        if not self.feature_modules:
            raise ValueError(f"{self.name} has no feature extraction: name its stage modules "
                             "(feature_modules) for feature and relation distillation")
        return self._hooked(x)

    def _hooked(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        modules = dict(self.inner.named_modules())
        handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: found.__setitem__(n, out))
                   for n in self.feature_modules]
        try:
            out = self.inner(x)
        finally:
            for h in handles:
                h.remove()
        logits = out[0] if isinstance(out, (tuple, list)) else out
        stages = [found[n] for n in self.feature_modules]
        return logits, stages, stages[-1].mean(dim=(2, 3))

    @property
    def output_stride(self) -> int:
        """Input pixels per output pixel of a segmenter (1 for classifiers and full-size outputs)."""
        return int(getattr(self.inner, "output_stride", 1))

    @property
    def stage_channels(self) -> list[int]:
        """Channels of each stage feature map (found by one probe forward, then remembered)."""
        if self._stage_channels is None:
            c = self.normalize.mean.shape[1]
            was = self.training
            self.eval()
            with torch.no_grad():
                _, stages, _ = self.forward_features(torch.zeros(1, c, 64, 64))
            self.train(was)
            self._stage_channels = [s.shape[1] for s in stages]
        return self._stage_channels
