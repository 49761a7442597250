"""Exporters, registered by format name, and the parity check every export must pass."""

from .base import EXPORTERS, ExportResult, FORMATS, export_model
from . import onnx as _onnx  # noqa: F401
from . import openvino as _openvino  # noqa: F401

__all__ = ["EXPORTERS", "ExportResult", "FORMATS", "export_model"]
