"""Eager PyTorch, the baseline users compare against. It runs edgekd checkpoints (.pt):
an ONNX file carries no PyTorch module to run eagerly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ProfilingError
from .base import PROFILERS, LoadedModel


class TorchRuntime:
    name = "torch"
    device = "cpu (eager)"
    precisions = ("fp32",)

    @staticmethod
    def unavailable() -> str | None:
        return None

    @staticmethod
    def version() -> str:
        import torch

        return torch.__version__

    @staticmethod
    def load(model_path: Path, threads: int, precision: str = "fp32", shape: list[int] | None = None) -> LoadedModel:
        import torch

        from ..models.io import load_checkpoint

        if model_path.suffix != ".pt":
            raise ProfilingError(f"the torch runtime runs edgekd checkpoints (.pt), not {model_path.name}; "
                                 "profile RUN_DIR/teacher.pt or a candidate's student.pt")
        model, _ = load_checkpoint(model_path)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)  # process-wide in PyTorch: restored by close()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return LoadedModel(run=run, close=lambda: torch.set_num_threads(previous))


PROFILERS.register("torch")(TorchRuntime())
