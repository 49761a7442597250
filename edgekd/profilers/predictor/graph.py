"""Per-node cost of an ONNX graph at a concrete input shape: FLOPs, bytes moved, operator kind.

    Conv      FLOPs = 2 * out_elements * (C_in / groups) * kh * kw   (+ out_elements with a bias)
    Gemm      FLOPs = 2 * M * N * K                                    (MatMul alike)
    eltwise   FLOPs = out_elements (Relu, Clip, Add, Mul, BatchNormalization x2, ...)
    pool      FLOPs = in_elements
    bytes     = (every input, weights included, + every output) x bytes per element

Kinds: conv, conv1x1 (pointwise), dwconv (depthwise), gemm, eltwise, pool, layout (reshapes,
concats: data movement only), fused (an activation the runtime fuses into the conv/GEMM before it).
A convolution also records its output channels: CPU runtimes run convolutions whose channels
fill whole vector blocks (16 fp32 lanes: ONNX Runtime's NCHWc kernels on AVX-512) on faster
kernels than the rest, so the device model fits those apart (`fit_kind`: measured here, an
EdgeNet with 72-channel blocks costs about 25 % more per FLOP than one with 64 or 96); and so are
convolutions on maps of at most 4x4 positions (the last stages of a ResNet at 64 px), whose
kernels run far below their per-FLOP rate on larger maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

KINDS = ("conv", "conv1x1", "dwconv", "gemm", "eltwise", "pool", "layout", "fused")
CONV_KINDS = ("conv", "conv1x1", "dwconv")
BLOCK = 16  # channels per vector block
TINY = 16  # output maps of at most 4x4 positions
FIT_KINDS = tuple(f"{k}{u}{s}" for k in CONV_KINDS for u in ("", "_u") for s in ("", "_t")) + (
    "gemm", "eltwise", "pool", "layout", "fused", "reorder")
SQUEEZE = {"ReduceMean", "GlobalAveragePool"}
ELTWISE = {"Relu", "Clip", "Add", "Sub", "Mul", "Div", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu",
           "BatchNormalization", "Sqrt", "Pow", "Exp", "Erf", "Softmax", "PRelu", "Neg", "Abs", "Max", "Min",
           "QuantizeLinear", "DequantizeLinear", "Cast"}
POOL = {"GlobalAveragePool", "AveragePool", "MaxPool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"}
FUSABLE = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "BatchNormalization"}
FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Constant", "Identity"}  # no data moved
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class NodeCost:
    name: str
    op_type: str
    kind: str
    flops: float
    bytes: float
    channels: int = 0  # convolutions: output channels
    pixels: int = 0  # convolutions: output positions per image (H x W)


def fit_kind(node: NodeCost) -> str:
    """The kind the device model fits a factor for: a convolution whose output channels are not
    whole vector blocks gets `_u`, one on a map of at most TINY positions `_t`; the rest as they are."""
    if node.kind not in CONV_KINDS:
        return node.kind
    return f"{node.kind}{'_u' if node.channels % BLOCK else ''}{'_t' if 0 < node.pixels <= TINY else ''}"


@dataclass(frozen=True)
class GraphCost:
    nodes: list[NodeCost]
    input_shape: list[int]
    precision: str
    weights_bytes: float
    peak_activation_bytes: float  # the largest inputs + outputs of any one node

    @property
    def flops(self) -> float:
        return sum(n.flops for n in self.nodes)

    @property
    def bytes(self) -> float:
        return sum(n.bytes for n in self.nodes)

    def by_kind(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for n in self.nodes:
            k = out.setdefault(n.kind, {"nodes": 0, "flops": 0.0, "bytes": 0.0})
            k["nodes"] += 1
            k["flops"] += n.flops
            k["bytes"] += n.bytes
        return out


def _with_shape(model: onnx.ModelProto, shape: list[int]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in initializers)
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ValueError(f"input {inp.name} has {len(dims)} axes, the shape given has {len(shape)}")
    for d, v in zip(dims, shape):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    return shape_inference.infer_shapes(model, data_prop=True)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.dim_value > 0 for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
        elif vi.type.tensor_type.HasField("shape") and not dims:
            shapes[vi.name] = []  # a scalar
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _numel(shape: list[int] | None) -> int:
    return int(np.prod(shape)) if shape else (1 if shape == [] else 0)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_cost(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: set[str], elem_bytes: int) -> NodeCost:
    ins = [shapes.get(i) for i in node.input if i]
    outs = [shapes.get(o) for o in node.output if o]
    out_elems = sum(_numel(s) for s in outs)
    op = node.op_type
    if op in FREE:
        return NodeCost(node.name, op, "layout", 0.0, 0.0)
    moved = (sum(_numel(s) for s in ins) + out_elems) * elem_bytes
    if op == "Conv":
        w = shapes.get(node.input[1]) or [0, 0, 1, 1]
        group = int(_attr(node, "group", 1))
        cin_per_group = w[1]
        k = int(np.prod(w[2:])) if len(w) > 2 else 1
        flops = 2.0 * out_elems * cin_per_group * k + (out_elems if len(node.input) > 2 and node.input[2] else 0)
        if group > 1 and cin_per_group == 1:
            kind = "dwconv"
        elif k == 1 and group == 1:
            kind = "conv1x1"
        else:
            kind = "conv"
        out_shape = outs[0] or []
        pixels = int(np.prod(out_shape[2:])) if len(out_shape) > 2 else 0
        return NodeCost(node.name, op, kind, flops, moved, int(w[0]), pixels)
    if op in ("Gemm", "MatMul"):
        a, b = ins[0] or [1, 1], ins[1] or [1, 1]
        trans_a = op == "Gemm" and int(_attr(node, "transA", 0)) == 1
        trans_b = op == "Gemm" and int(_attr(node, "transB", 0)) == 1
        m = _numel(a) // a[-1] if not trans_a else a[-1]
        kdim = a[-1] if not trans_a else a[-2]
        n = b[-2] if trans_b else b[-1]
        return NodeCost(node.name, op, "gemm", 2.0 * m * n * kdim, moved)
    if op in POOL:
        return NodeCost(node.name, op, "pool", float(sum(_numel(s) for s in ins[:1])), moved)
    if op in ELTWISE:
        factor = 2.0 if op == "BatchNormalization" else 1.0
        return NodeCost(node.name, op, "eltwise", factor * out_elems, moved)
    return NodeCost(node.name, op, "layout", 0.0, moved)  # Concat, Transpose, Gather, Pad, Resize...


def _reorders(model: onnx.ModelProto, shapes: dict[str, list[int]], eb: int) -> list[NodeCost]:
    """The layout conversions a CPU runtime adds that the graph does not show: a squeeze-and-excite
    block (a feature map averaged, the average through convolutions, multiplied back onto the map)
    takes the map out of the convolutions' blocked layout and back (ONNX Runtime's ReorderOutput /
    ReorderInput around it: a quarter of MobileNetV3-Small's time here). One `reorder` node per
    such block, moving the map twice."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in model.graph.node:
        if n.op_type in SQUEEZE and n.input and any(c.op_type == "Conv" for c in consumers.get(n.output[0], [])):
            moved = 2 * 2 * _numel(shapes.get(n.input[0])) * eb  # out of the blocked layout and back, read + write
            out.append(NodeCost(f"{n.name}/reorder", "Reorder", "reorder", 0.0, float(moved)))
    return out


def graph_costs(model: onnx.ModelProto | Path | str, input_shape: list[int], precision: str = "fp32") -> GraphCost:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inferred = _with_shape(model, input_shape)
    shapes = _shapes(inferred)
    inits = {i.name for i in inferred.graph.initializer}
    eb = BYTES_PER_ELEMENT.get(precision, 4)
    nodes = [node_cost(n, shapes, inits, eb) for n in inferred.graph.node]
    # runtimes fuse an activation into the convolution or GEMM that feeds it: no own pass over memory
    producer = {o: n for n in inferred.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in inferred.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    for idx, n in enumerate(inferred.graph.node):
        src = producer.get(n.input[0]) if n.input else None
        if (n.op_type in FUSABLE and src is not None and src.op_type in ("Conv", "Gemm", "MatMul")
                and consumers.get(n.input[0], 0) == 1):
            nodes[idx] = NodeCost(n.name, n.op_type, "fused", 0.0, 0.0)
    nodes += _reorders(inferred, shapes, eb)
    weights = sum(_numel(list(i.dims)) for i in inferred.graph.initializer) * eb
    peak_act = 0.0
    for n in inferred.graph.node:
        act = sum(_numel(shapes.get(t)) for t in list(n.input) + list(n.output) if t and t not in inits)
        peak_act = max(peak_act, act * eb)
    return GraphCost(nodes, list(input_shape), precision, float(weights), float(peak_act))
