"""INT8 ONNX with explicit Q/DQ nodes from ONNX Runtime's static quantizer, calibrated on real
images. The `onnx-int8` export, the INT8 search and TensorRT's explicit quantization (symmetric
activations) all use it; a leaf that imports nothing of edgekd."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


def calibration_batches(data: np.ndarray | None, shape: list[int], n: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Batches for INT8 calibration: the given images in input-shaped batches (the incomplete
    last one dropped), else uniform noise (fine for timing, not for accuracy)."""
    if data is None:
        rng = np.random.default_rng(seed)
        return [rng.random(shape, dtype=np.float32) for _ in range(n)]
    b = shape[0]
    return [np.ascontiguousarray(data[i:i + b], dtype=np.float32) for i in range(0, len(data) - b + 1, b)][:n]


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def quantize_qdq(onnx_path: Path, out_path: Path, batches: list[np.ndarray], symmetric: bool = False) -> Path:
    """Static INT8 quantization in QDQ form, per-channel weights. `symmetric` activations (S8S8)
    for TensorRT; asymmetric uint8 activations (U8S8) for ONNX Runtime on CPUs."""
    import onnx  # here, not at start: a run that never quantizes does not pay for it
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    prepped = out_path.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(onnx_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    finally:
        prepped.unlink(missing_ok=True)
    return out_path
