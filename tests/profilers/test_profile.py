import pytest

from edgekd.convert.onnx import to_onnx
from edgekd.errors import ProfilingError
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import profile_model
from edgekd.profilers.base import ProfileSettings
from edgekd.targets import get_target

from .test_rapl import make_domain


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny.onnx"
    return to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 4), path, [1, 3, 16, 16])


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_measurement_has_statistics_conditions_and_sources(tiny_onnx, runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))  # no RAPL here: energy is estimated
    m = profile_model(tiny_onnx, get_target("cpu"), runtime, [1, 3, 16, 16],
                      ProfileSettings(threads=1, warmup=3, min_runs=20, min_seconds=0.0))
    assert m.runtime == runtime and m.threads == 1 and m.batch == 1 and m.input_shape == [1, 3, 16, 16]
    assert m.latency_ms.n == 20 and m.latency_ms.warmup == 3
    assert 0 < m.latency_ms.min <= m.latency_ms.p50 <= m.latency_ms.p90 <= m.latency_ms.p99 <= m.latency_ms.max
    assert m.peak_memory_mb is not None and m.peak_memory_mb > 0
    assert m.model_size_mb == pytest.approx(tiny_onnx.stat().st_size / 2**20, rel=1e-3)
    assert m.source == {"latency": "measured", "model_size": "measured", "peak_memory": "measured",
                        "energy": "predicted"}
    assert m.energy_meter == "estimate"
    assert m.energy_mj == pytest.approx(15.0 * m.latency_ms.p50)  # W x ms = mJ; the p50, as C_hw reads latency
    assert "estimated" in m.notes[0]


def test_rapl_energy_is_labelled_measured(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))
    make_domain(tmp_path, "package-0", "intel-rapl:0", energy=1000)  # a counter that does not move
    m = profile_model(tiny_onnx, get_target("cpu"), "onnxruntime", [1, 3, 16, 16],
                      ProfileSettings(threads=1, warmup=0, min_runs=5, min_seconds=0.0, measure_memory=False))
    assert m.energy_meter == "rapl" and m.source["energy"] == "measured" and m.energy_mj == 0.0
    assert m.peak_memory_mb is None and "peak_memory" not in m.source


def test_unloadable_model_and_unknown_runtime(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    settings = ProfileSettings(threads=1, warmup=0, min_runs=1, min_seconds=0.0)
    with pytest.raises(ProfilingError, match="onnxruntime cannot load"):
        profile_model(bad, get_target("cpu"), "onnxruntime", [1, 3, 16, 16], settings)
    with pytest.raises(Exception, match="unknown runtime 'tflite'"):
        profile_model(bad, get_target("cpu"), "tflite", [1, 3, 16, 16], settings)


def test_targets_catalogue_and_aliases(tmp_path, monkeypatch):
    cpu = get_target("host")
    assert cpu.name == "cpu" and cpu.host["logical_cores"] >= 1 and cpu.memory_budget_mb > 0
    (tmp_path / "board.yaml").write_text(
        "name: board\ndevice_class: drone\nruntimes: [onnxruntime]\ndefault_budget_ms: 50\naliases: [b]\n")
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", str(tmp_path))
    assert get_target("b").default_budget_ms == 50
    (tmp_path / "broken.yaml").write_text("name: broken\ndevice_class: toaster\n")
    with pytest.raises(Exception, match="broken.yaml is invalid"):
        get_target("b")
