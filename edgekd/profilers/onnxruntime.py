"""ONNX Runtime on the CPU execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .base import PROFILERS


@PROFILERS.register("onnxruntime")
class OnnxRuntimeAdapter:
    name = "onnxruntime"
    device = "CPUExecutionProvider"

    @staticmethod
    def version() -> str:
        import onnxruntime

        return onnxruntime.__version__

    @staticmethod
    def load(model_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
