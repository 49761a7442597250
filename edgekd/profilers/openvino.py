"""OpenVINO: the CPU device, and GPU / NPU where OpenVINO reports them; latency hint, one
stream, fixed thread count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import PROFILERS, LoadedModel
from .inputs import check_precision


@dataclass(frozen=True)
class OpenVINORuntime:
    name: str
    device: str
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")  # the precision the IR was exported in

    def unavailable(self) -> str | None:
        try:
            import openvino as ov
        except ImportError:
            return "openvino is not installed (pip install openvino)"
        devices = ov.Core().available_devices
        if not any(d.split(".")[0] == self.device for d in devices):
            return f"OpenVINO reports no {self.device} device here (it has {', '.join(devices) or 'none'})"
        return None

    @staticmethod
    def version() -> str:
        import openvino

        return openvino.get_version()

    def load(self, model_path: Path, threads: int, precision: str = "fp32",
             shape: list[int] | None = None) -> LoadedModel:
        import openvino as ov

        check_precision(model_path, precision, int8_only=True)
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if self.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        if precision == "fp32":
            # an FP32 model runs in FP32: without this, CPUs with bf16/AMX units silently use bf16
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = ov.Core().compile_model(str(model_path), self.device, config)
        request = compiled.create_infer_request()
        return LoadedModel(run=lambda x: request.infer([x])[0], execution=execution_of(compiled, self.device))

    def load_plugin_default(self, model_path: Path, threads: int) -> LoadedModel:
        """The model as a deployment that sets no precision hint runs it: the plugin's default
        inference precision (bf16 on CPUs with bf16/AMX units)."""
        import openvino as ov

        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if self.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(model_path), self.device, config)
        request = compiled.create_infer_request()
        return LoadedModel(run=lambda x: request.infer([x])[0], execution=execution_of(compiled, self.device))


def execution_of(compiled, device: str) -> dict[str, str]:
    """The device and the inference precision a compiled model really runs with."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    except RuntimeError:  # a device without the property
        precision = "unknown"
    return {"device": device, "INFERENCE_PRECISION_HINT": precision}


for _rt in (OpenVINORuntime("openvino", "CPU"), OpenVINORuntime("openvino-gpu", "GPU"),
            OpenVINORuntime("openvino-npu", "NPU")):
    PROFILERS.register(_rt.name)(_rt)
