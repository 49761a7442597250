"""A PyTorch model as an ONNX graph: opset 17, dynamic batch axis, optionally simplified with
onnxslim, checked, with edgekd metadata embedded in metadata_props. A leaf that the exporters,
the profilers and the search all build on."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ExportError
from ..files import first_line

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def to_onnx(model: torch.nn.Module, path: Path, input_shape: list[int], metadata: dict[str, str] | None = None,
            simplify: bool = False) -> Path:
    """Write `model` as ONNX at `path`; the batch axis is dynamic. A model that cannot be
    exported (an operator ONNX has no equivalent for) raises ExportError naming the operator."""
    import onnx  # on first export: a run refused at its start does not pay for it

    model.eval()
    inner = getattr(model, "inner", None)
    own = getattr(inner, "deployable_onnx", None)
    if callable(own):  # a detector exported as deployed, its own decoding and NMS inside (torchvision's)
        return Path(own(path, input_shape, metadata))
    if isinstance(inner, torch.jit.ScriptModule) and hasattr(model, "normalize"):
        return _script_behind_normalize(model, inner, path, input_shape, metadata, simplify)
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


def _script_behind_normalize(model: torch.nn.Module, inner: torch.jit.ScriptModule, path: Path,
                             input_shape: list[int], metadata: dict[str, str] | None, simplify: bool) -> Path:
    """A TorchScript program behind edgekd's input normalisation: the tracing exporter cannot
    trace a Python module that calls a loaded ScriptModule, so the program is exported alone and
    the normalisation ((x - mean) / std) is put in front of its graph as two ONNX nodes."""
    if getattr(model, "resolution", None):
        raise ExportError(f"ONNX export to {path} failed: a TorchScript model resized inside cannot be exported; "
                          "give the data at the size the program takes (--image-size)")
    import onnx

    norm: Any = model.normalize
    to_onnx(inner, path, input_shape, simplify=simplify)
    proto = onnx.load(str(path))
    graph = proto.graph
    for node in graph.node:
        node.input[:] = ["normalized" if i == INPUT_NAME else i for i in node.input]
    for name, tensor in (("norm_mean", norm.mean), ("norm_std", norm.std)):
        graph.initializer.append(onnx.numpy_helper.from_array(tensor.detach().numpy().astype("float32"), name))
    front = [onnx.helper.make_node("Sub", [INPUT_NAME, "norm_mean"], ["centered"]),
             onnx.helper.make_node("Div", ["centered", "norm_std"], ["normalized"])]
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path
