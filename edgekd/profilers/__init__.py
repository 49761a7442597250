"""Measurement: one profiler per runtime (same method, different load/run), energy meters,
peak memory in a child process. Every figure carries its source and its conditions."""

from .base import PROFILERS, profile_model
from .measurement import LatencyStats, Measurement
from . import onnxruntime as _ort  # noqa: F401  (registers "onnxruntime")
from . import openvino as _ov  # noqa: F401  (registers "openvino")

__all__ = ["PROFILERS", "profile_model", "LatencyStats", "Measurement"]
