"""ONNX Runtime: the CPU execution provider, and the CUDA and TensorRT providers where the
installed onnxruntime build has them (onnxruntime-gpu)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import PROFILERS, LoadedModel
from .inputs import check_precision


@dataclass(frozen=True)
class OnnxRuntime:
    name: str
    provider: str
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")  # the model runs at the precision it was exported in

    @property
    def device(self) -> str:
        return self.provider

    def unavailable(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if self.provider not in ort.get_available_providers():
            return (f"this onnxruntime build has no {self.provider} "
                    f"(it has {', '.join(ort.get_available_providers())}; install onnxruntime-gpu)")
        return None

    @staticmethod
    def version() -> str:
        import onnxruntime

        return onnxruntime.__version__

    def load(self, model_path: Path, threads: int, precision: str = "fp32",
             shape: list[int] | None = None) -> LoadedModel:
        import onnxruntime as ort

        check_precision(model_path, precision)  # the model runs at the precision it was exported in
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [self.provider] + (["CPUExecutionProvider"] if self.provider != "CPUExecutionProvider" else [])
        sess = ort.InferenceSession(str(model_path), opts, providers=providers)
        name = sess.get_inputs()[0].name
        return LoadedModel(run=lambda x: sess.run(None, {name: x})[0])


for _rt in (OnnxRuntime("onnxruntime", "CPUExecutionProvider"),
            OnnxRuntime("onnxruntime-cuda", "CUDAExecutionProvider"),
            OnnxRuntime("onnxruntime-tensorrt", "TensorrtExecutionProvider")):
    PROFILERS.register(_rt.name)(_rt)
