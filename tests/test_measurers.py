"""One decision of where a model is measured (edgekd.measurers), used by optimize, benchmark and
calibrate alike."""

from pathlib import Path

import pytest

from edgekd.convert.onnx import to_onnx
from edgekd.errors import ProfilingError
from edgekd.measurers import LocalMeasurer, PredictedMeasurer, measurer_for
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import ProfileSettings
from edgekd.targets import get_target

from .conftest import run_cli

SHAPE = [1, 3, 16, 16]
FAST = ProfileSettings(threads=1, warmup=1, min_runs=5, min_seconds=0.0, measure_memory=False, energy_meter="none")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return to_onnx(build_model(ArchSpec(width=0.25), 3, 4), tmp_path_factory.mktemp("m") / "m.onnx", SHAPE)


def test_this_machine_is_measured_here(onnx_model):
    m = measurer_for(get_target("cpu"), FAST)
    assert isinstance(m, LocalMeasurer) and m.mode == "measured" and m.runtime == "onnxruntime"
    got = m.measure(onnx_model, SHAPE)
    assert got.source["latency"] == "measured" and got.latency_ms.n >= 5 and got.threads == 1
    quick = m.screen(onnx_model, SHAPE)
    assert quick.latency_ms.n >= 20 and quick.peak_memory_mb is None  # the short screening run


def test_a_board_without_an_agent_is_predicted_and_says_so(onnx_model):
    m = measurer_for(get_target("jetson"), FAST)
    assert isinstance(m, PredictedMeasurer) and m.mode == "predicted" and m.runtime == "tensorrt"
    assert m.describe.startswith("PREDICTED by the device model for jetson-orin-nano-8gb")
    got = m.measure(onnx_model, SHAPE)
    assert {k: v for k, v in got.source.items() if k != "model_size"} == dict.fromkeys(
        ("latency", "peak_memory", "energy"), "predicted")  # the file size is read, the rest predicted
    with pytest.raises(ProfilingError, match="reads ONNX graphs"):
        m.measure(onnx_model.with_suffix(".xml"), SHAPE)


def test_a_runtime_missing_here_is_a_clear_error(onnx_model):
    with pytest.raises(ProfilingError, match="tensorrt is not available here"):
        measurer_for(get_target("cpu"), FAST, runtime="tensorrt").measure(onnx_model, SHAPE)


def test_calibrate_refuses_a_board_it_cannot_reach():
    proc = run_cli("calibrate", "--target", "jetson")
    assert proc.returncode == 2 and "is not this machine: pass --device-url" in proc.stderr
