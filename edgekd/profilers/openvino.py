"""OpenVINO on the CPU device, latency hint, fixed thread count."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .base import PROFILERS


@PROFILERS.register("openvino")
class OpenVINOAdapter:
    name = "openvino"
    device = "CPU"

    @staticmethod
    def version() -> str:
        import openvino

        return openvino.get_version()

    @staticmethod
    def load(model_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(str(model_path), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            # an FP32 model runs in FP32: without this, CPUs with bf16/AMX units silently use bf16
            "INFERENCE_PRECISION_HINT": "f32",
        })
        request = compiled.create_infer_request()
        return lambda x: request.infer([x])[0]
