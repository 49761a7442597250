"""A PyTorch model as an ONNX graph: opset 17, dynamic batch axis, optionally simplified with
onnxslim, checked, with edgekd metadata embedded in metadata_props. A leaf that the exporters,
the profilers and the search all build on."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
import torch

from ..errors import ExportError
from ..files import first_line

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def to_onnx(model: torch.nn.Module, path: Path, input_shape: list[int], metadata: dict[str, str] | None = None,
            simplify: bool = False) -> Path:
    """Write `model` as ONNX at `path`; the batch axis is dynamic. A model that cannot be
    exported (an operator ONNX has no equivalent for) raises ExportError naming the operator."""
    model.eval()
    tmp = path.with_suffix(".tmp.onnx")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model, (torch.zeros(input_shape),), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        proto = onnx.load(str(tmp))
        if simplify:
            import onnxslim

            proto = onnxslim.slim(proto)
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        tmp.replace(path)  # complete or absent: a killed export never leaves half a model for --resume
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types, e.g. for an unsupported operator
        raise ExportError(f"ONNX export to {path} failed: {first_line(exc, 240)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
