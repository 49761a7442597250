"""TensorRT: build an engine from ONNX on this GPU, time inference with CUDA events, report
engine size and device memory. This is the code that runs on Jetson boards and NVIDIA GPUs.

Precision:
- fp32: the network as parsed.
- fp16: TensorRT 8.6/10 set BuilderFlag.FP16; TensorRT 11 removed that flag (strong typing
  only), so the ONNX is converted to FP16 weights/compute first (inputs and outputs stay FP32).
- int8: explicit quantization. The ONNX is quantized to Q/DQ form with ONNX Runtime's static
  quantizer on calibration data (random data when none is given: fine for timing, not for
  accuracy), which every TensorRT version builds; TensorRT 8.6/10 also get BuilderFlag.INT8.
  With TensorRT 8.6/10 an entropy calibrator (`calibrator=True`) may be used instead, with a
  calibration cache file.

Engines are cached next to the ONNX file by (model bytes, precision, TensorRT version, GPU),
with a timing cache, so a second profile of the same model does not rebuild."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProfilingError
from .base import PROFILERS, LoadedModel

WORKSPACE_BYTES = 1 << 30


def trt_major(trt: Any) -> int:
    return int(trt.__version__.split(".")[0])


def network_flags(trt: Any) -> int:
    """Explicit batch: a flag before TensorRT 10, the only mode (flag deprecated/removed) after."""
    if trt_major(trt) < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


@dataclass(frozen=True)
class BuildPlan:
    """What the builder is asked for, decided without a GPU (unit-tested here)."""

    onnx_transform: str | None  # None, "fp16" (convert ONNX to FP16) or "qdq" (insert Q/DQ)
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members to set
    calibrator: bool


def build_plan(precision: str, trt_version: str, use_calibrator: bool = False) -> BuildPlan:
    major = int(trt_version.split(".")[0])
    weak_typing = major < 11  # TensorRT 11 removed the precision builder flags
    if precision == "fp32":
        return BuildPlan(None, (), False)
    if precision == "fp16":
        return BuildPlan(None, ("FP16",), False) if weak_typing else BuildPlan("fp16", (), False)
    if precision == "int8":
        if use_calibrator:
            if not weak_typing:
                raise ProfilingError(f"TensorRT {trt_version} has no INT8 calibrators (removed in 11); "
                                     "use explicit quantization (the default)")
            return BuildPlan(None, ("INT8", "FP16"), True)
        return BuildPlan("qdq", ("INT8", "FP16") if weak_typing else (), False)
    raise ProfilingError(f"TensorRT precision must be fp32, fp16 or int8, not {precision!r}")


def optimization_shapes(shape: list[int], max_batch: int | None = None) -> tuple[list[int], list[int], list[int]]:
    """(min, opt, max) shapes for an input whose batch axis is dynamic: optimised for `shape`."""
    mb = max(max_batch or shape[0], shape[0])
    return [1, *shape[1:]], list(shape), [mb, *shape[1:]]


def engine_cache_name(onnx_bytes: bytes, precision: str, trt_version: str, gpu_name: str, shape: list[int]) -> str:
    h = hashlib.sha256(onnx_bytes)
    h.update(f"{precision}|{trt_version}|{gpu_name}|{shape}".encode())
    return f"{h.hexdigest()[:16]}.{precision}.engine"


def convert_fp16(onnx_path: Path, out_path: Path) -> Path:
    """FP16 weights and compute, FP32 inputs/outputs (what strong typing builds as FP16)."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ProfilingError("FP16 engines with TensorRT 11 need onnxconverter-common "
                             "(pip install 'edgekd[tensorrt]')") from None
    model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


def _cuda():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result: tuple) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ProfilingError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


class Int8EntropyCalibrator:
    """Factory for a trt.IInt8EntropyCalibrator2 subclass (TensorRT 8.6/10 only)."""

    @staticmethod
    def make(trt: Any, batches: list[np.ndarray], cache_file: Path) -> Any:
        cudart = _cuda()

        class _Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.batches = iter(batches)
                self.nbytes = batches[0].nbytes
                self.device = _check(cudart.cudaMalloc(self.nbytes))

            def get_batch_size(self) -> int:
                return batches[0].shape[0]

            def get_batch(self, names: list[str]) -> list[int] | None:
                x = next(self.batches, None)
                if x is None:
                    return None
                _check(cudart.cudaMemcpy(self.device, x.ctypes.data, self.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
                return [int(self.device)]

            def read_calibration_cache(self) -> bytes | None:
                return cache_file.read_bytes() if cache_file.exists() else None

            def write_calibration_cache(self, cache: Any) -> None:
                cache_file.write_bytes(bytes(cache))

        return _Calibrator()


def build_engine(onnx_path: Path, shape: list[int], precision: str, *, calibrator: bool = False,
                 calib_data: np.ndarray | None = None, cache_dir: Path | None = None) -> tuple[bytes, list[str]]:
    """Serialized engine bytes (from the engine cache when present) and notes on how it was built."""
    import onnx
    import tensorrt as trt

    cudart = _cuda()
    props = _check(cudart.cudaGetDeviceProperties(0))
    gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    cache_dir = cache_dir or onnx_path.parent / ".edgekd-trt"
    cache_dir.mkdir(parents=True, exist_ok=True)
    onnx_bytes = onnx_path.read_bytes()
    engine_file = cache_dir / engine_cache_name(onnx_bytes, precision, trt.__version__, gpu, shape)
    plan = build_plan(precision, trt.__version__, calibrator)
    notes = [f"TensorRT {trt.__version__} engine for {gpu}, {precision}"
             + (" (explicit Q/DQ quantization)" if plan.onnx_transform == "qdq" else "")
             + (" (entropy calibrator)" if plan.calibrator else "")]
    if engine_file.exists():
        return engine_file.read_bytes(), notes + [f"engine reused from {engine_file}"]

    from ..convert.qdq import calibration_batches, has_qdq, quantize_qdq

    source = onnx_path
    if plan.onnx_transform == "qdq" and has_qdq(onnx.load(str(onnx_path), load_external_data=False)):
        notes.append("the ONNX already carries Q/DQ nodes: built as quantized")
    elif plan.onnx_transform == "qdq":
        batches = calibration_batches(calib_data, [1, *shape[1:]])
        source = quantize_qdq(onnx_path, cache_dir / f"{engine_file.stem}.qdq.onnx", batches, symmetric=True)
        if calib_data is None:
            notes.append("INT8 scales calibrated on random data: latency is representative, accuracy is not")
    elif plan.onnx_transform == "fp16":
        source = convert_fp16(onnx_path, cache_dir / f"{engine_file.stem}.fp16.onnx")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ProfilingError(f"TensorRT cannot parse {source}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    timing_file = cache_dir / "timing.cache"
    timing = config.create_timing_cache(timing_file.read_bytes() if timing_file.exists() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    inp = network.get_input(0)
    if any(d < 0 for d in inp.shape):
        lo, opt, hi = optimization_shapes(shape)
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
        if plan.calibrator:
            config.set_calibration_profile(profile)
    if plan.calibrator:
        config.int8_calibrator = Int8EntropyCalibrator.make(
            trt, calibration_batches(calib_data, [1, *shape[1:]]), cache_dir / f"{engine_file.stem}.calib")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ProfilingError(f"TensorRT could not build a {precision} engine from {onnx_path} (see its log above)")
    engine_bytes = bytes(serialized)
    engine_file.write_bytes(engine_bytes)
    timing_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_bytes, notes


class TrtSession:
    """A deserialized engine with device buffers, a stream and CUDA events."""

    def __init__(self, engine_bytes: bytes, shape: list[int]):
        import tensorrt as trt

        self.trt = trt
        self.cudart = cudart = _cuda()
        free_before, _ = _check(cudart.cudaMemGetInfo())
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ProfilingError("TensorRT could not deserialize the engine (built by another TensorRT or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.start_ev = _check(cudart.cudaEventCreate())
        self.stop_ev = _check(cudart.cudaEventCreate())
        self.buffers: dict[str, tuple[int, np.ndarray]] = {}
        self.input_name = self.output_name = ""
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.context.set_input_shape(name, shape)
                self.input_name = self.input_name or name
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dims = list(self.context.get_tensor_shape(name))
            host = np.empty(dims, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            dev = _check(cudart.cudaMalloc(max(host.nbytes, 1)))
            self.context.set_tensor_address(name, int(dev))
            self.buffers[name] = (dev, host)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT and not self.output_name:
                self.output_name = name
        free_after, _ = _check(cudart.cudaMemGetInfo())
        self.device_memory_mb = max(0, free_before - free_after) / 2**20

    def _enqueue(self, x: np.ndarray) -> None:
        cudart = self.cudart
        dev_in, host_in = self.buffers[self.input_name]
        np.copyto(host_in, x, casting="same_kind")
        _check(cudart.cudaMemcpyAsync(dev_in, host_in.ctypes.data, host_in.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise ProfilingError("TensorRT execution failed")
        dev_out, host_out = self.buffers[self.output_name]
        _check(cudart.cudaMemcpyAsync(host_out.ctypes.data, dev_out, host_out.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def run(self, x: np.ndarray) -> np.ndarray:
        self._enqueue(x)
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return self.buffers[self.output_name][1].copy()

    def timed_run(self, x: np.ndarray) -> float:
        """Milliseconds between CUDA events around copy-in, inference and copy-out."""
        cudart = self.cudart
        _check(cudart.cudaEventRecord(self.start_ev, self.stream))
        self._enqueue(x)
        _check(cudart.cudaEventRecord(self.stop_ev, self.stream))
        _check(cudart.cudaEventSynchronize(self.stop_ev))
        return float(_check(cudart.cudaEventElapsedTime(self.start_ev, self.stop_ev)))

    def close(self) -> None:
        for dev, _ in self.buffers.values():
            self.cudart.cudaFree(dev)
        self.buffers.clear()
        self.cudart.cudaEventDestroy(self.start_ev)
        self.cudart.cudaEventDestroy(self.stop_ev)
        self.cudart.cudaStreamDestroy(self.stream)


def unavailable_reason(import_trt: Callable[[], Any] | None = None,
                       import_cuda: Callable[[], Any] | None = None) -> str | None:
    """Why TensorRT cannot run here, or None. Importers are injectable for tests."""
    try:
        (import_trt or (lambda: __import__("tensorrt")))()
    except ImportError:
        return "tensorrt is not installed (it ships with JetPack; elsewhere pip install 'edgekd[tensorrt]')"
    try:
        cudart = (import_cuda or _cuda)()
    except ImportError:
        return "cuda-python is not installed (pip install 'edgekd[tensorrt]')"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        return "no CUDA device is visible (driver missing, or --runtime nvidia / --gpus not given to the container)"
    return None


class TensorRTRuntime:
    name = "tensorrt"
    device = "CUDA GPU"
    precisions = ("fp32", "fp16", "int8")
    calibration_data: np.ndarray | None = None  # set by callers that have real data

    @staticmethod
    def unavailable() -> str | None:
        return unavailable_reason()

    @staticmethod
    def version() -> str:
        import tensorrt

        return tensorrt.__version__

    @classmethod
    def load(cls, model_path: Path, threads: int, precision: str = "fp32",
             shape: list[int] | None = None) -> LoadedModel:
        import onnx

        if model_path.suffix == ".engine":  # an engine exported earlier on this device
            engine, notes = model_path.read_bytes(), [f"engine file {model_path.name}"]
            if shape is None:
                raise ProfilingError("give the input shape to run a TensorRT engine file")
        else:
            if shape is None:
                dims = onnx.load(str(model_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
                shape = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
            engine, notes = build_engine(model_path, shape, precision, calib_data=cls.calibration_data)
        session = TrtSession(engine, shape)
        notes.append("latency by CUDA events around host-to-device copy, inference and device-to-host copy")
        return LoadedModel(run=session.run, timed_run=session.timed_run, device_memory_mb=session.device_memory_mb,
                           artifact_size_mb=len(engine) / 2**20, notes=notes, close=session.close)


PROFILERS.register("tensorrt")(TensorRTRuntime())
