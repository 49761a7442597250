"""Exporters, registered by format name, and the parity check every export must pass."""

from . import onnx as _onnx  # noqa: F401
from . import onnx_int8 as _onnx_int8  # noqa: F401
from . import openvino as _openvino  # noqa: F401
from . import tensorrt as _tensorrt  # noqa: F401
from .base import EXPORTERS, FORMATS, ExportContext, ExportResult, export_model, parse_formats

__all__ = ["EXPORTERS", "FORMATS", "ExportContext", "ExportResult", "export_model", "parse_formats"]
