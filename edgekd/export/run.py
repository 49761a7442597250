"""Export one model to several formats, each verified: used by `edgekd export` and by
`edgekd optimize` for the selected student."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data import Dataset
from ..errors import ExportError, ExportFailures
from .base import FORMATS, ExportContext, ExportResult, export_model, parse_formats
from .parity import DEFAULT_TOLERANCES, ParityTolerance


def calibration_subset(ds: Dataset, n: int, seed: int = 0) -> np.ndarray:
    """`n` training images drawn at random (never validation images) for INT8 calibration; for
    detection, first an image holding each class (`calibration_rows`)."""
    return ds.x_train[torch.from_numpy(calibration_rows(ds, n, seed))].numpy()


def calibration_rows(ds: Dataset, n: int, seed: int = 0) -> np.ndarray:
    """Rows of the training split for INT8 calibration: drawn at random; for detection, an image
    with objects of each class is taken first (in the random order, so the set holds every class
    the training split has: activation ranges of rare classes are not left to chance)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds.y_train), generator=g).numpy()
    if ds.task != "detection":
        return order[:n]
    classes = ds.y_train[..., 0].long().numpy()
    first = []
    for k in range(len(ds.classes)):
        has = order[(classes[order] == k).any(1)]
        if len(has) and has[0] not in first:
            first.append(int(has[0]))
    rest = [int(i) for i in order if i not in set(first)]
    return np.array((first + rest)[:n], dtype=np.int64)


def calibration_note(ds: Dataset, n: int, seed: int = 0) -> str:
    """What the calibration set holds: its size and, for detection, the boxes of each class."""
    rows = calibration_rows(ds, n, seed)
    if ds.task != "detection":
        return f"{len(rows)} training images drawn at random"
    classes = ds.y_train[torch.from_numpy(rows)][..., 0].long()
    counts = ", ".join(f"{c} {int((classes == k).sum())}" for k, c in enumerate(ds.classes))
    return f"{len(rows)} training images, one holding each class taken first, the rest at random (boxes: {counts})"


def export_metadata(ds: Dataset, arch: str, run_id: str, mean: list[float], std: list[float],
                    output_stride: int | None = None) -> dict[str, str]:
    return {
        "edgekd_version": __version__, "run_id": run_id, "arch": arch, "dataset": ds.name,
        "classes": ",".join(ds.classes), "bands": ",".join(ds.bands), "input_layout": "NCHW",
        "input_range": "0..1 (normalisation is inside the model)",
        "normalization_mean": ",".join(map(str, mean)), "normalization_std": ",".join(map(str, std)),
        **({"band_scale": ",".join(f"{v:g}" for v in ds.band_scale),
            "input_scaling": "each band's raw value / band_scale, clipped to 0..1"} if ds.band_scale else {}),
        "image_size": str(ds.image_size), "resize": "bilinear to image_size x image_size", "task": ds.task,
        **({"output": "logits N x K x h x w (upsample bilinear to the tile for the class map)",
            "ignore_index": str(ds.ignore_index), "tile_size": str(ds.image_size),
            **({"output_stride": str(output_stride)} if output_stride else {})} if ds.task == "segmentation" else {}),
    }


def export_formats(model: torch.nn.Module, ds: Dataset, formats: str | list[str], out_dir: Path, stem: str,
                   metadata: dict[str, str], *, calibration_size: int = 300, max_accuracy_drop: float | None = None,
                   tolerances: dict[str, ParityTolerance] | None = None, threads: int = 1, seed: int = 0,
                   on_done: Callable[[ExportResult], None] = lambda _: None) -> list[ExportResult]:
    names = parse_formats(formats if isinstance(formats, str) else ",".join(formats))
    shape = [1, ds.in_channels, ds.image_size, ds.image_size]
    needs_calib = any(FORMATS[n].needs_calibration for n in names)
    from ..tasks import task_of

    task = task_of(ds)
    ctx = ExportContext(
        input_shape=shape, metadata=metadata,
        calibration=calibration_subset(ds, calibration_size, seed) if needs_calib else None,
        validation=(ds.x_val, ds.y_val.numpy()), max_accuracy_drop=max_accuracy_drop, compare=task.compare,
        metric=lambda logits, labels: task.evaluate(torch.from_numpy(logits), torch.from_numpy(labels))["accuracy"])
    tolerances = task.tolerances(tolerances or dict(DEFAULT_TOLERANCES))
    results, failed = [], []
    for name in names:  # one format's failure is recorded and the others are still built
        tol = (tolerances or {}).get(FORMATS[name].precision)
        try:
            res = export_model(name, model, out_dir, stem, ctx, ds.x_val, ds.y_val, tol, threads=threads)
        except ExportError as exc:
            failed.append((name, str(exc)))
            continue
        results.append(res)
        on_done(res)
    if failed:
        raise ExportFailures(failed, results)
    return results
