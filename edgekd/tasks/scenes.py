"""Whole scenes: a segmenter run over a large image by sliding window (the training tiles'
grid, overlapping windows blended), and what a scene costs on the target.

Blending: each window's logits (upsampled to the window) are weighted by a ramp that is 1 in the
window's middle and falls linearly over the overlap towards its edges (never to 0), and every
pixel gets the weighted mean of the windows that cover it -- seams between tiles fade instead of
cutting. Where the model is translation-equivariant (no resize, no padding effects) the stitched
logits equal the whole image's."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data.masks import tile_grid


def blend_weight(side: int, overlap: int) -> torch.Tensor:
    """(side, side) weights: 1 inside, a linear ramp over the `overlap` band at the edges (> 0)."""
    if overlap <= 0:
        return torch.ones(side, side)
    d = torch.arange(side, dtype=torch.float32)
    edge = torch.minimum(d, side - 1 - d)  # pixels to the nearest edge
    ramp = torch.clamp((edge + 1) / (overlap + 1), max=1.0)
    return ramp[:, None] * ramp[None, :]


@torch.no_grad()
def predict_scene(run: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int, overlap: int,
                  image_size: int, batch: int = 8) -> torch.Tensor:
    """Logits (K, H, W) of a whole image (C, H, W): the windows of `tile_grid`, each resized to
    `image_size`, run (`run` maps N x C x S x S to dense logits), upsampled back and blended."""
    _, h, w = image.shape
    windows = tile_grid(h, w, tile, overlap)
    total: torch.Tensor | None = None
    weight = torch.zeros(h, w)
    for i in range(0, len(windows), batch):
        part = windows[i:i + batch]
        crops = torch.stack([_resize(image[:, t:t + s, left:left + s], image_size) for t, left, s in part])
        logits = run(crops).float()
        for (t, left, s), out in zip(part, logits):
            up = F.interpolate(out[None], size=(s, s), mode="bilinear", align_corners=False)[0]
            wgt = blend_weight(s, overlap)
            if total is None:
                total = torch.zeros(out.shape[0], h, w)
            total[:, t:t + s, left:left + s] += up * wgt
            weight[t:t + s, left:left + s] += wgt
    assert total is not None
    return total / weight.clamp_min(1e-12)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def ms_per_megapixel(p50_ms: float, tile: int, overlap: int = 0) -> float:
    """A scene's cost on the target: one tile's p50 per (tile - overlap)^2 new pixels, per 10^6 px
    (the overlap is paid again by every neighbour)."""
    step = max(1, tile - overlap)
    return p50_ms * 1e6 / (step * step)
