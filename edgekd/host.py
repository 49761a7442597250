"""Facts of the machine edgekd runs on: how many threads to use by default and which software
versions a run used. A leaf: the agent's jobs, the CLI and the pipeline all read it."""

from __future__ import annotations

import os
import platform

import psutil

from . import __version__


def default_threads() -> int:
    """Physical cores (logical when psutil cannot tell), at least 1."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def software_versions() -> dict[str, str]:
    """Versions of edgekd, Python, the platform and every runtime a report's figures depend on."""
    import numpy
    import onnx
    import onnxruntime
    import openvino
    import torch

    return {
        "edgekd": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "numpy": numpy.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version(),
    }
