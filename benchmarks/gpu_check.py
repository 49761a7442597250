"""GPU check: on a machine with an NVIDIA GPU and TensorRT, build FP32, FP16 and INT8 engines of
a small EdgeNet, profile each (CUDA-event timing, device memory, NVML energy where readable) and
print the measurements; ONNX Runtime on the CPU runs the same model for comparison.

Run (after benchmarks/gpu_check.sh has installed what it needs):
    python benchmarks/gpu_check.py [--out DIR]
Writes DIR/gpu_check.json (default: benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from edgekd.convert.onnx import to_onnx
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import PROFILERS, ProfileSettings, profile_model
from edgekd.targets import get_target

SHAPE = [1, 3, 64, 64]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    reason = PROFILERS.get("tensorrt").unavailable()
    if reason:
        raise SystemExit(f"gpu_check: TensorRT cannot run here: {reason}")
    work = Path(tempfile.mkdtemp(prefix="edgekd-gpu-"))
    target = get_target("cpu")
    rows = []
    models = (("student", ArchSpec(width=0.5, depth=1)), ("teacher", ArchSpec(width=1.5, depth=3, expansion=4)))
    for label, arch in models:
        onnx_path = to_onnx(build_model(arch, 3, 7), work / f"{label}.onnx", SHAPE)
        for runtime, precision in (("tensorrt", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "int8"),
                                   ("onnxruntime", "fp32")):
            settings = ProfileSettings(threads=1, warmup=50, min_runs=200, min_seconds=1.0, precision=precision,
                                       idle_seconds=1.0 if runtime == "tensorrt" else 0.0)
            m = profile_model(onnx_path, target, runtime, SHAPE, settings)
            rows.append({"model": label, "arch": arch.name, **m.model_dump(mode="json")})
            lat = m.latency_ms
            print(f"{label:8s} {runtime:12s} {precision:5s} p50 {lat.p50:8.4f} ms  p90 {lat.p90:8.4f} ms  "
                  f"n {lat.n:5d}  size {m.model_size_mb:7.3f} MB  device mem {m.device_memory_mb}  "
                  f"energy {m.energy_mj} mJ ({m.source.get('energy', '-')}, {m.energy_meter})  timing: {m.timing}")
            for note in m.notes:
                print("    note:", note)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"machine": platform.platform(), "input_shape": SHAPE,
                                                         "measurements": rows}, indent=2))


if __name__ == "__main__":
    main()
