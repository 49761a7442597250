"""Checkpoints edgekd writes and reads: plain tensors and primitives, loaded with
`torch.load(weights_only=True)` so that a checkpoint can never run code."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError
from ..files import atomic_write, first_line
from .arch import ArchSpec
from .external import ExternalNet
from .family import EdgeNet, build_model

Net = EdgeNet | ExternalNet  # what a checkpoint holds

FORMAT = "edgekd-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, model: nn.Module, *, classes: list[str], bands: list[str],
                    image_size: int, dataset: str, role: str, metrics: dict[str, Any] | None = None,
                    data_source: dict[str, Any] | None = None) -> None:
    """`data_source` says how to load the data set again (see edgekd.data.dataset_from_source),
    so that `edgekd export CHECKPOINT` finds calibration and validation images by itself."""
    if not isinstance(model, (EdgeNet, ExternalNet)):
        raise CheckpointError(f"a {type(model).__name__} cannot be checkpointed: only EdgeNets and models edgekd "
                              "can rebuild from their source are")
    mean = model.normalize.mean.flatten().tolist()
    std = model.normalize.std.flatten().tolist()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgekd_version": __version__,
        "role": role,
        "arch": model.arch.model_dump() if isinstance(model, EdgeNet) else None,
        "source": model.source if isinstance(model, ExternalNet) else None,  # rebuilt by name, never unpickled
        "classes": list(classes),
        "bands": list(bands),
        "in_channels": len(bands),
        "image_size": int(image_size),
        "normalization": {"mean": mean, "std": std},
        "dataset": dataset,
        "metrics": metrics or {},
        "data_source": data_source or {},
        "state_dict": model.state_dict(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())  # never leave a half-written checkpoint behind


def load_checkpoint(path: Path) -> tuple[Net, dict[str, Any]]:
    """The model and the checkpoint's metadata; clear errors for anything that is not ours."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a file written by edgekd (e.g. "
                              "RUN_DIR/teacher.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any file: the unpickler fails in many ways (a text file: IndexError)
        first = first_line(exc, 160)
        raise CheckpointError(f"checkpoint {path} cannot be read safely ({first}); "
                              "pass a checkpoint written by edgekd") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an edgekd checkpoint; pass a file written by edgekd "
                              "(RUN_DIR/teacher.pt or RUN_DIR/candidates/NAME/student.pt)")
    try:
        norm = payload["normalization"]
        model: Net
        if payload.get("source"):
            from .sources import rebuild

            model = rebuild(payload["source"], norm["mean"], norm["std"])
        else:
            arch = ArchSpec.model_validate(payload["arch"])
            model = build_model(arch, int(payload["in_channels"]), len(payload["classes"]), norm["mean"], norm["std"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = first_line(exc, 160)
        raise CheckpointError(f"checkpoint {path} is damaged or from an incompatible edgekd ({first})") from None
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


def load_edgenet(path: Path) -> tuple[EdgeNet, dict[str, Any]]:
    """A checkpoint that must hold a member of the EdgeNet family (a search's rung)."""
    model, meta = load_checkpoint(path)
    if not isinstance(model, EdgeNet):
        raise CheckpointError(f"{path} holds {model.name}, not an EdgeNet student")
    return model, meta
