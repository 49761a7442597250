from pathlib import Path

import pytest
import yaml

from edgekd.errors import TargetError
from edgekd.targets import Target, catalogue, fp32_flops_per_cycle, get_target

from ..conftest import run_cli

BUILTIN = Path(__file__).resolve().parents[2] / "edgekd" / "targets"
REQUIRED = {"cpu", "jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-xavier-nx",
            "drone-rpi5", "nvidia-gpu"}


@pytest.mark.parametrize("path", sorted(BUILTIN.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_builtin_file_validates_against_the_schema(path):
    raw = yaml.safe_load(path.read_text())
    t = Target.model_validate(raw)
    assert t.name == path.stem and t.runtimes and t.default_budget_ms > 0 and t.sources
    if t.device_class in ("jetson", "drone"):  # boards: every figure the device model needs is published
        assert t.memory_budget_mb and t.power_modes and t.default_power_mode
        assert t.peak_gflops.get("fp32") and t.memory_bandwidth_gbps


def test_catalogue_has_the_devices_and_unique_aliases():
    cat = catalogue()
    assert REQUIRED <= set(cat)
    names = [n for t in cat.values() for n in [t.name, *t.aliases]]
    assert len(names) == len(set(names))
    assert get_target("jetson").name == "jetson-orin-nano-8gb"
    assert get_target("jetson-orin-nano").name == "jetson-orin-nano-8gb"
    assert get_target("drone").name == "drone-rpi5"
    assert get_target("agx-orin").power_w() == 50


def test_schema_rejects_inconsistent_files(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
        "name": "bad", "device_class": "jetson", "runtimes": ["tensorrt"], "default_budget_ms": 10,
        "power_modes": [{"name": "10W", "watts": 10}], "default_power_mode": "99W"}))
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", str(tmp_path))
    with pytest.raises(TargetError, match="bad.yaml is invalid"):
        catalogue()


def test_user_file_replaces_or_adds(tmp_path, monkeypatch):
    (tmp_path / "my-board.yaml").write_text(yaml.safe_dump({
        "name": "my-board", "device_class": "drone", "runtimes": ["onnxruntime"], "default_budget_ms": 50,
        "peak_gflops": {"fp32": 100}, "memory_bandwidth_gbps": 10, "sources": ["measured by us"]}))
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", str(tmp_path))
    assert get_target("my-board").peak_gflops == {"fp32": 100}
    assert not get_target("my-board").is_local and get_target("cpu").is_local


def test_host_detection_and_isa_rule():
    cpu = get_target("cpu")
    assert cpu.host["physical_cores"] >= 1 and cpu.memory_budget_mb > 0
    assert fp32_flops_per_cycle(["avx512f", "avx2"]) == 64
    assert fp32_flops_per_cycle(["avx2", "fma"]) == 32
    assert fp32_flops_per_cycle(["asimd"]) == 16
    assert fp32_flops_per_cycle([]) == 8


def test_targets_commands():
    proc = run_cli("targets")
    assert proc.returncode == 0 and "jetson-orin-nano-8gb" in proc.stdout and "drone-rpi5" in proc.stdout
    proc = run_cli("targets", "show", "drone")
    assert proc.returncode == 0
    shown = yaml.safe_load(proc.stdout)
    assert shown["name"] == "drone-rpi5" and shown["memory_bandwidth_gbps"] == 17 and shown["local"] is False
    proc = run_cli("targets", "show", "toaster")
    assert proc.returncode == 2 and "unknown target 'toaster'" in proc.stderr
