"""Profile one model with several runtimes; a runtime that cannot run here is reported with
its reason instead of stopping the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
        if reason is not None:
            skipped.append(Unavailable(name, reason))
        else:
            try:
                measured.append(profile_model(path, target, name, model.input_shape, settings, cache))
            except ProfilingError as exc:
                skipped.append(Unavailable(name, str(exc)))
        on_done(name)
    return measured, skipped
