"""Measurement: one profiler per runtime (same method, different load/run), energy meters,
peak memory in a child process, and the measurement cache. Every figure carries its source
and its conditions."""

from . import onnxruntime as _ort  # noqa: F401  (registers onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt)
from . import openvino as _ov  # noqa: F401  (registers openvino, openvino-gpu, openvino-npu)
from . import tensorrt as _trt  # noqa: F401  (registers tensorrt)
from . import torch as _torch  # noqa: F401  (registers torch)
from .base import PROFILERS, LoadedModel, ProfileSettings, load_runtime, profile_model
from .cache import MeasurementCache
from .measurement import LatencyStats, Measurement

__all__ = ["PROFILERS", "LoadedModel", "ProfileSettings", "load_runtime", "profile_model", "MeasurementCache",
           "LatencyStats", "Measurement"]
