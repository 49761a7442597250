import json
import shutil
from dataclasses import replace

import pytest

from edgekd.convert.onnx import to_onnx
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import MeasurementCache, ProfileSettings, contention, measurement, profile_model
from edgekd.targets import get_target

from ..conftest import run_cli

SHAPE = [1, 3, 16, 16]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    a = to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 4), d / "a.onnx", SHAPE)
    b = to_onnx(build_model(ArchSpec(width=0.5, depth=1), 3, 4), d / "b.onnx", SHAPE)
    return a, b


FAST = ProfileSettings(threads=1, warmup=1, min_runs=5, min_seconds=0.0, measure_memory=False, energy_meter="none")


@pytest.fixture(autouse=True)
def quiet_host(monkeypatch):
    """Whether a figure is cached depends on its spread; these tests are about the key, so every
    spread counts as quiet (the busy case has its own test below)."""
    monkeypatch.setattr(measurement, "NOISY_P90_OVER_P50", float("inf"))
    monkeypatch.setattr(measurement, "NOISY_P99_OVER_P50", float("inf"))
    for limit in ("CONTENDED_PRESSURE", "CONTENDED_OTHERS", "CONTENDED_STEAL"):  # nor does CPU pressure
        monkeypatch.setattr(contention, limit, float("inf"))


def test_a_busy_hosts_figure_is_flagged_and_never_cached(tmp_path, two_models, monkeypatch):
    a, _ = two_models
    monkeypatch.setattr(measurement, "NOISY_P90_OVER_P50", 0.5)  # every spread now looks busy
    cache = MeasurementCache(tmp_path / "m.sqlite")
    first = profile_model(a, get_target("cpu"), "onnxruntime", SHAPE, replace(FAST, attempts=2, retry_pause_s=0), cache)
    assert first.contended and "latency spread says the host was busy" in first.contended
    assert first.conditions.attempts == 2  # tried again before it was marked
    assert any(n.startswith("contended after 2 timed windows") for n in first.notes)
    assert len(cache) == 0
    again = profile_model(a, get_target("cpu"), "onnxruntime", SHAPE, FAST, cache)
    assert again.source["latency"] == "measured"  # measured again, not answered from a noisy record


def test_hit_on_identical_bytes_even_under_another_name(tmp_path, two_models):
    a, _ = two_models
    cache = MeasurementCache(tmp_path / "m.sqlite")
    first = profile_model(a, get_target("cpu"), "onnxruntime", SHAPE, FAST, cache)
    copy = tmp_path / "renamed.onnx"
    shutil.copy(a, copy)
    again = profile_model(copy, get_target("cpu"), "onnxruntime", SHAPE, FAST, cache)
    assert first.source["latency"] == "measured" and first.cached_from is None
    assert again.source == {"latency": "cached", "model_size": "cached"}
    assert again.cached_from is not None and again.latency_ms == first.latency_ms
    assert len(cache) == 1


@pytest.mark.parametrize("change", ["bytes", "target", "runtime", "precision", "shape", "threads"])
def test_miss_when_any_key_part_changes(tmp_path, two_models, change):
    a, b = two_models
    cache = MeasurementCache(tmp_path / "m.sqlite")
    base = dict(model_path=a, target="cpu", runtime="onnxruntime", runtime_version="1", input_shape=SHAPE,
                settings=FAST)
    cache.put(cache.key(**base), profile_model(a, get_target("cpu"), "onnxruntime", SHAPE, FAST))
    changed = dict(base)
    if change == "bytes":
        changed["model_path"] = b
    elif change == "target":
        changed["target"] = "jetson-orin-nano"
    elif change == "runtime":
        changed["runtime"] = "openvino"
    elif change == "precision":
        changed["settings"] = ProfileSettings(**{**FAST.__dict__, "precision": "fp16"})
    elif change == "shape":
        changed["input_shape"] = [2, 3, 16, 16]
    elif change == "threads":
        changed["settings"] = ProfileSettings(**{**FAST.__dict__, "threads": 2})
    assert cache.get(cache.key(**base)) is not None
    assert cache.get(cache.key(**changed)) is None


def test_cache_survives_a_process_restart_and_no_cache_bypasses_it(tmp_path, two_models):
    a, _ = two_models
    args = ["profile", str(a), "--runtime", "onnxruntime", "--runs", "5", "--min-seconds", "0", "--warmup", "1",
            "--no-memory", "--energy-meter", "none", "--cache-dir", str(tmp_path), "--quiet"]
    outs = []
    for i, extra in enumerate([[], [], ["--no-cache"]]):
        out = tmp_path / f"{i}.json"
        proc = run_cli(*args, *extra, "--json", str(out))
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(out.read_text())["measurements"][0])
    assert outs[0]["source"]["latency"] == "measured"
    if any("host was busy" in n for n in outs[0]["notes"]):  # a busy host's figure is measured again, not cached
        assert outs[1]["source"]["latency"] == "measured"
    else:
        assert outs[1]["source"]["latency"] == "cached" and outs[1]["latency_ms"] == outs[0]["latency_ms"]
    assert outs[2]["source"]["latency"] == "measured"
