"""Parity where the model runs: an export that agrees with PyTorch here can still disagree on
the board (another TensorRT tactic, an INT8 kernel, an FP16 overflow). Through the agent, the
device runs each ONNX export on a bounded validation slice in its own runtime and returns the
logits; they are compared with the PyTorch model's here. A precision that fails on the device
falls back to the next one (INT8 -> FP16 -> FP32, as the device's runtime offers them), and the
result says which precision passed and what was tried."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel

from ..data.store import Images, Labels
from ..errors import EdgeKDError, ExportError
from ..profilers import PROFILERS
from .parity import Parity, ParityTolerance, compare_logits, default_tolerance

Compare = Callable[[np.ndarray, np.ndarray, np.ndarray], Parity]  # the task's comparison (reference, export, labels)

if TYPE_CHECKING:
    from ..measurers import AgentMeasurer
    from .base import ExportResult

FALLBACK = {"int8": ("int8", "fp16", "fp32"), "fp16": ("fp16", "fp32"), "fp32": ("fp32",)}
BUILDS_FP16 = {"tensorrt"}  # runtimes that build an FP16 model from the FP32 ONNX themselves
DEVICE_SLICE = 256  # validation images sent to the device (the agent takes at most 512)


class DeviceTry(BaseModel):
    precision: str
    model: str  # the file the device ran (the INT8 export, or the FP32 ONNX for FP16 / FP32)
    parity: Parity | None = None
    problems: list[str] = []  # tolerance violations, or why the device could not run it


class DeviceParity(BaseModel):
    """The export's agreement with PyTorch on the device, and how it was reached."""

    where: str  # the agent and its board
    runtime: str
    requested: str  # the export's precision
    precision: str | None  # the precision that passed on the device; None: none did
    parity: Parity | None  # of the precision that passed
    tried: list[DeviceTry]
    execution: dict[str, str] = {}

    @property
    def fell_back(self) -> bool:
        return self.precision is not None and self.precision != self.requested

    def summary(self) -> str:
        if self.precision is None:
            return (f"FAILED on the device ({self.where}, {self.runtime}): "
                    + "; ".join(f"{t.precision}: {', '.join(t.problems)}" for t in self.tried))
        p = self.parity
        assert p is not None
        said = (f"on the device ({self.where}, {self.runtime} {self.precision}): {p.agreement_name} "
                f"{p.top1_agreement:.4f}, max |diff| {p.max_abs_diff:.2e}")
        if self.fell_back:
            failed = "; ".join(f"{t.precision}: {', '.join(t.problems)}" for t in self.tried if t.problems)
            said += f" -- FELL BACK from {self.requested} ({failed})"
        return said


def device_parity(measurer: AgentMeasurer, model: torch.nn.Module, export: ExportResult, fp32_onnx: Path,
                  x: Images, y: Labels, tolerances: dict[str, ParityTolerance] | None = None,
                  compare: Compare | None = None) -> DeviceParity:
    """Run `export` (an ONNX file) on the device and compare with `model`; fall back on failure."""
    xs, ys = x[:DEVICE_SLICE], y[:DEVICE_SLICE]
    with torch.no_grad():
        ref = np.concatenate([model.eval()(xs[i:i + 64]).numpy() for i in range(0, len(xs), 64)])
    offered = PROFILERS.get(measurer.runtime).precisions
    tried: list[DeviceTry] = []
    execution: dict[str, str] = {}
    for precision in FALLBACK.get(export.precision, (export.precision,)):
        if precision not in offered or (precision == "fp16" and export.precision != "fp16"
                                         and measurer.runtime not in BUILDS_FP16):
            continue
        path = Path(export.path) if precision == export.precision else fp32_onnx
        attempt = DeviceTry(precision=precision, model=path.name)
        tried.append(attempt)
        try:
            logits, resp = measurer.logits(path, xs.numpy(), precision)
        except EdgeKDError as exc:
            attempt.problems = [f"the device could not run it ({exc})"]
            continue
        execution = resp.execution
        if logits.shape[1:] != ref.shape[1:] or not 0 < len(logits) <= len(ref):
            attempt.problems = [f"the device returned logits of shape {list(logits.shape)}, not {list(ref.shape)}"]
            continue
        ref, ys = ref[:len(logits)], ys[:len(logits)]  # the images the device's body limit let through
        if logits.shape != ref.shape:
            attempt.problems = [f"the device returned logits of shape {list(logits.shape)}, not {list(ref.shape)}"]
            continue
        attempt.parity = (compare or compare_logits)(ref, logits, ys.numpy())
        tol = (tolerances or {}).get(precision) or default_tolerance(precision)
        attempt.problems = attempt.parity.violations(tol)
        if not attempt.problems:
            return DeviceParity(where=measurer.describe, runtime=measurer.runtime, requested=export.precision,
                                precision=precision, parity=attempt.parity, tried=tried, execution=execution)
    return DeviceParity(where=measurer.describe, runtime=measurer.runtime, requested=export.precision, precision=None,
                        parity=None, tried=tried, execution=execution)


def check_on_device(measurer: AgentMeasurer, model: torch.nn.Module, exports: list[ExportResult],
                    x: Images, y: Labels, tolerances: dict[str, ParityTolerance] | None = None,
                    compare: Compare | None = None) -> list[ExportResult]:
    """Every ONNX export checked on the device too (the agent runs ONNX models); an export passes
    only if host and device parity pass, at its precision or one it fell back to."""
    onnx = next((Path(e.path) for e in exports if e.format == "onnx"), None)
    out = []
    for e in exports:
        if not e.path.endswith(".onnx") or onnx is None:
            out.append(e)
            continue
        dp = device_parity(measurer, model, e, onnx, x, y, tolerances, compare)
        if dp.precision is None:
            raise ExportError(f"{e.format} export {e.path} passed parity here but not on the device: {dp.summary()}")
        out.append(e.model_copy(update={"device_parity": dp, "notes": [*e.notes, "parity " + dp.summary()]}))
    return out
