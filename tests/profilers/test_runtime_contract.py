"""Every registered runtime, walked as a set (NNCF's template tests): one that can run here
returns a Measurement whose `source` names exactly the figures it holds; one that cannot says
why, and loading through it fails with that reason."""

from pathlib import Path

import pytest

from edgekd.convert.onnx import to_onnx
from edgekd.errors import ProfilingError
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import save_checkpoint
from edgekd.profilers import PROFILERS, ProfileSettings, load_runtime, profile_model
from edgekd.targets import get_target

SHAPE = [1, 3, 16, 16]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("contract")
    m = build_model(ArchSpec(width=0.25), 3, 4)
    save_checkpoint(d / "m.pt", m, classes=list("abcd"), bands=["R", "G", "B"], image_size=16, dataset="x",
                    role="student")
    return {"onnx": to_onnx(m, d / "m.onnx", SHAPE), "pt": d / "m.pt"}


FIGURES = {"peak_memory": "peak_memory_mb", "device_memory": "device_memory_mb", "energy": "energy_mj"}


@pytest.mark.parametrize("name", PROFILERS.names())
def test_every_runtime_measures_or_says_why_not(name, models):
    rt = PROFILERS.get(name)
    assert rt.name == name and rt.precisions and "fp32" in rt.precisions
    reason = rt.unavailable()
    path = models["pt" if name == "torch" else "onnx"]
    if reason is not None:
        assert isinstance(reason, str) and reason
        with pytest.raises(ProfilingError, match="not available here"):
            load_runtime(name, path, 1, "fp32", SHAPE)
        pytest.skip(f"{name}: {reason}")
    settings = ProfileSettings(threads=1, warmup=2, min_runs=5, min_seconds=0.0, energy_meter="estimate")
    m = profile_model(path, get_target("cpu"), name, SHAPE, settings)
    assert m.runtime == name and m.runtime_version == rt.version() and m.latency_ms.n >= 5
    assert m.source["latency"] == "measured" and m.source["model_size"] == "measured"
    for key, attr in FIGURES.items():
        assert (key in m.source) == (getattr(m, attr) is not None), (key, m.source)
    assert m.source["energy"] == "predicted"  # the estimate meter never claims a measurement
