"""What `edgekd profile MODEL` was given: an ONNX file, or an edgekd checkpoint (.pt) that is
exported to ONNX for the ONNX runtimes and run as is by the torch runtime. Bad files get clear
errors before any runtime sees them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ProfilingError
from ..files import first_line


@dataclass(frozen=True)
class ModelInput:
    onnx_path: Path
    checkpoint: Path | None  # set when the user gave an edgekd checkpoint
    input_shape: list[int]


def parse_shape(text: str) -> list[int]:
    try:
        dims = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise ProfilingError(f"--shape {text!r} is not a shape; write positive integers, e.g. --shape 1,3,64,64")
    return dims


def onnx_input_shape(path: Path, shape: list[int] | None, batch: int) -> list[int]:
    """The input shape to profile: --shape if given; else the graph's, with a dynamic batch
    axis set to `batch`. Any other dynamic axis needs --shape."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ProfilingError(f"model file {path} does not exist; pass an ONNX file or an edgekd checkpoint (.pt)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise ProfilingError(f"{path} is not a readable ONNX model ({type(exc).__name__}); pass an .onnx file "
                             "exported by edgekd or torch.onnx, or an edgekd checkpoint (.pt)") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = first_line(exc, 160, default="invalid")
        raise ProfilingError(f"{path} is not a valid ONNX model (truncated or damaged?): {first}") from None
    if not model.graph.input:
        raise ProfilingError(f"{path} is not a valid ONNX model: its graph has no input (truncated or damaged?)")
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    if shape is not None:
        if len(shape) != len(dims):
            raise ProfilingError(f"--shape {','.join(map(str, shape))} has {len(shape)} axes, but input "
                                 f"{inp.name!r} of {path.name} has {len(dims)}")
        return shape
    resolved: list[int] = []
    for i, d in enumerate(dims):
        if d.dim_value > 0:
            resolved.append(d.dim_value)
        elif i == 0:
            resolved.append(batch)
        else:
            names = ",".join(d2.dim_param or "?" if d2.dim_value <= 0 else str(d2.dim_value) for d2 in dims)
            raise ProfilingError(f"input {inp.name!r} of {path.name} has a dynamic shape ({names}); "
                                 "give one with --shape, e.g. --shape 1,3,64,64")
    return resolved


def resolve_model(path: Path, shape: list[int] | None, batch: int, work_dir: Path) -> ModelInput:
    if path.suffix == ".pt":
        from ..convert.onnx import to_onnx
        from ..models.io import load_checkpoint
        from .cache import file_sha256

        model, meta = load_checkpoint(path)
        ckpt_shape = [batch, int(meta["in_channels"]), int(meta["image_size"]), int(meta["image_size"])]
        onnx_path = work_dir / f"{file_sha256(path)[:16]}.onnx"
        if not onnx_path.exists():  # the same checkpoint always gives the same ONNX bytes
            work_dir.mkdir(parents=True, exist_ok=True)
            to_onnx(model, onnx_path, ckpt_shape)
        return ModelInput(onnx_path, path, shape or ckpt_shape)
    return ModelInput(path, None, onnx_input_shape(path, shape, batch))


QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                 "DynamicQuantizeLinear", "FakeQuantize"}


def model_precision(path: Path) -> str | None:
    """The precision a model file was exported in: int8 (quantized operators), fp16 (half-precision
    weights), fp32; None when the file is not a graph this can read (e.g. a TensorRT engine)."""
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        ops = {n.op_type for n in proto.graph.node}
        if ops & QUANTIZED_OPS:
            return "int8"
        half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
        return "fp16" if half else "fp32"
    if path.suffix == ".xml":
        import openvino as ov

        ops = {op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops()}
        return "int8" if ops & QUANTIZED_OPS else None  # fp16 and fp32 IRs both run at the runtime's hint
    return None


def check_precision(path: Path, precision: str, int8_only: bool = False) -> None:
    """A figure labelled int8 (or fp16) must come from a model in that precision: a ProfilingError
    naming what the file is and the fix otherwise. `int8_only`: the runtime may run a float model
    at either float precision (OpenVINO's hint), so only int8 against float is a mismatch."""
    found = model_precision(path)
    if found is None or found == precision:
        return
    if int8_only and "int8" not in (found, precision):
        return
    raise ProfilingError(f"{path.name} is a {found} model, not {precision}: profile it with --precision {found}, or "
                         f"export its {precision} version first (e.g. edgekd export CHECKPOINT --formats "
                         f"{'onnx-int8' if precision == 'int8' else 'openvino-fp16'})")
