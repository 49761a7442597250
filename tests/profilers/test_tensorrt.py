"""TensorRT: everything that needs no GPU is tested here; the engine build and timing are
marked `gpu` and run where an NVIDIA GPU and TensorRT are present."""

import types

import numpy as np
import onnx
import pytest

from edgekd.convert.onnx import to_onnx
from edgekd.convert.qdq import calibration_batches, quantize_qdq
from edgekd.errors import ProfilingError
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import PROFILERS, ProfileSettings, profile_model
from edgekd.profilers.tensorrt import (
    build_plan,
    engine_cache_name,
    network_flags,
    optimization_shapes,
    unavailable_reason,
)
from edgekd.targets import get_target

SHAPE = [1, 3, 16, 16]


@pytest.mark.parametrize("precision, version, plan", [
    ("fp32", "10.3.0", (None, (), False)),
    ("fp16", "8.6.2", (None, ("FP16",), False)),
    ("fp16", "10.3.0", (None, ("FP16",), False)),
    ("fp16", "11.4.0", ("fp16", (), False)),  # 11 removed the flag: convert the ONNX instead
    ("int8", "10.3.0", ("qdq", ("INT8", "FP16"), False)),
    ("int8", "11.4.0", ("qdq", (), False)),
])
def test_build_plan_per_tensorrt_version(precision, version, plan):
    p = build_plan(precision, version)
    assert (p.onnx_transform, p.builder_flags, p.calibrator) == plan


def test_calibrator_only_before_tensorrt_11_and_bad_precision():
    assert build_plan("int8", "8.6.1", use_calibrator=True).calibrator
    with pytest.raises(ProfilingError, match="no INT8 calibrators"):
        build_plan("int8", "11.0.0", use_calibrator=True)
    with pytest.raises(ProfilingError, match="fp32, fp16 or int8"):
        build_plan("bf8", "10.0.0")


def test_network_flags_explicit_batch_only_before_10():
    flag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    assert network_flags(types.SimpleNamespace(__version__="8.6.1", NetworkDefinitionCreationFlag=flag)) == 1
    assert network_flags(types.SimpleNamespace(__version__="10.3.0", NetworkDefinitionCreationFlag=flag)) == 0


def test_shapes_and_engine_names():
    assert optimization_shapes([4, 3, 64, 64]) == ([1, 3, 64, 64], [4, 3, 64, 64], [4, 3, 64, 64])
    assert optimization_shapes([1, 3, 64, 64], max_batch=8)[2] == [8, 3, 64, 64]
    a = engine_cache_name(b"model", "fp16", "10.3.0", "Orin", [1, 3, 64, 64])
    assert a == engine_cache_name(b"model", "fp16", "10.3.0", "Orin", [1, 3, 64, 64])
    for other in (engine_cache_name(b"model2", "fp16", "10.3.0", "Orin", [1, 3, 64, 64]),
                  engine_cache_name(b"model", "int8", "10.3.0", "Orin", [1, 3, 64, 64]),
                  engine_cache_name(b"model", "fp16", "10.4.0", "Orin", [1, 3, 64, 64]),
                  engine_cache_name(b"model", "fp16", "10.3.0", "H200", [1, 3, 64, 64])):
        assert other != a  # engines are specific to bytes, precision, TensorRT and GPU
    assert a.endswith(".fp16.engine")


def test_calibration_batches_from_data_or_noise():
    data = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    batches = calibration_batches(data, [2, 3, 2, 2])
    assert [b.shape for b in batches] == [(2, 3, 2, 2), (2, 3, 2, 2)]  # the incomplete last batch is dropped
    assert np.array_equal(batches[1], data[2:4])
    noise = calibration_batches(None, [1, 3, 2, 2], n=3)
    assert len(noise) == 3 and all(0 <= b.min() and b.max() < 1 for b in noise)


def test_int8_qdq_model_has_quantize_nodes_and_still_runs(tmp_path):
    src = to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 4), tmp_path / "m.onnx", SHAPE)
    out = quantize_qdq(src, tmp_path / "m.qdq.onnx", calibration_batches(None, SHAPE, n=8), symmetric=True)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": np.zeros(SHAPE, np.float32)})
    assert y[0].shape == (1, 4)


def test_unavailable_reasons_name_the_fix():
    def missing():
        raise ImportError("no")

    assert "tensorrt is not installed" in unavailable_reason(import_trt=missing)
    assert "cuda-python is not installed" in unavailable_reason(import_trt=lambda: None, import_cuda=missing)
    no_gpu = types.SimpleNamespace(cudaGetDeviceCount=lambda: (100, 0))
    assert "no CUDA device" in unavailable_reason(import_trt=lambda: None, import_cuda=lambda: no_gpu)
    gpu = types.SimpleNamespace(cudaGetDeviceCount=lambda: (0, 1))
    assert unavailable_reason(import_trt=lambda: None, import_cuda=lambda: gpu) is None


TRT_MISSING = PROFILERS.get("tensorrt").unavailable()


@pytest.mark.gpu
@pytest.mark.skipif(TRT_MISSING is not None, reason=f"needs an NVIDIA GPU with TensorRT: {TRT_MISSING}")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_profiles_on_the_gpu(tmp_path, precision):
    src = to_onnx(build_model(ArchSpec(width=0.5, depth=1), 3, 4), tmp_path / "m.onnx", [1, 3, 32, 32])
    m = profile_model(src, get_target("cpu"), "tensorrt", [1, 3, 32, 32],
                      ProfileSettings(threads=1, warmup=20, min_runs=100, min_seconds=0.2, precision=precision))
    assert m.precision == precision and m.timing.startswith("device events")
    assert m.latency_ms.n >= 100 and 0 < m.latency_ms.p50 <= m.latency_ms.p90
    assert m.device_memory_mb is not None and m.model_size_mb > 0
