"""Profile one model with several runtimes; a runtime that cannot run here is reported with
its reason instead of stopping the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProfilingError
from ..targets import Target
from .base import PROFILERS, ProfileSettings, profile_model
from .cache import MeasurementCache
from .inputs import ModelInput
from .measurement import Measurement


@dataclass(frozen=True)
class Unavailable:
    runtime: str
    reason: str


def profile_runtimes(model: ModelInput, target: Target, runtimes: list[str], settings: ProfileSettings,
                     cache: MeasurementCache | None, on_done: Callable[[str], None] = lambda _: None,
                     ) -> tuple[list[Measurement], list[Unavailable]]:
    for name in runtimes:
        PROFILERS.get(name)  # an unknown name is a user error before anything runs
    measured: list[Measurement] = []
    skipped: list[Unavailable] = []
    for name in runtimes:
        adapter = PROFILERS.get(name)
        reason = adapter.unavailable()
        path = model.checkpoint if name == "torch" else model.onnx_path
        if reason is None and path is None:
            reason = "needs an edgekd checkpoint (.pt): an ONNX file carries no PyTorch module to run eagerly"
        if reason is not None or path is None:
            skipped.append(Unavailable(name, reason or "no model file for this runtime"))
        else:
            try:
                measured.append(profile_model(path, target, name, model.input_shape, settings, cache))
            except ProfilingError as exc:
                skipped.append(Unavailable(name, str(exc)))
        on_done(name)
    return measured, skipped


def onnx_logits(path, x, threads: int, batch_size: int = 64, precision: str = "int8"):
    """Logits of an ONNX model (its INT8 version unless `precision` says otherwise) on images `x`,
    from ONNX Runtime here."""
    import torch

    from .base import load_runtime

    loaded = load_runtime("onnxruntime", path, threads, precision)
    try:
        return torch.cat([torch.from_numpy(loaded.run(x[i:i + batch_size].numpy()))
                          for i in range(0, len(x), batch_size)])
    finally:
        loaded.close()
