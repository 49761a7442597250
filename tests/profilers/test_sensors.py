"""Energy meters against fake sysfs trees and a fake NVML: exact expected joules."""

import sys
import types
from pathlib import Path

import pytest

from edgekd.profilers.energy import open_meter
from edgekd.profilers.energy.ina3221 import find_rails
from edgekd.profilers.energy.rapl import RaplMeter, rapl_domains
from edgekd.profilers.energy.sampling import integrate_j
from edgekd.targets import get_target

from .test_rapl import make_domain


def make_hwmon(root: Path, channels: dict[int, tuple[str, int, int]], name: str = "ina3221", idx: int = 0) -> Path:
    hw = root / "sys/class/hwmon" / f"hwmon{idx}"
    hw.mkdir(parents=True)
    (hw / "name").write_text(name + "\n")
    for n, (label, mv, ma) in channels.items():
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{mv}\n")
        (hw / f"curr{n}_input").write_text(f"{ma}\n")
    return hw


def test_trapezoid_integral_by_hand():
    assert integrate_j([0.0, 1.0, 3.0], [2.0, 4.0, 4.0]) == pytest.approx(3.0 + 8.0)
    assert integrate_j([0.0], [5.0]) == 0.0


def test_rapl_adds_dram_but_not_core_subdomains(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))
    pkg = make_domain(tmp_path, "package-0", "intel-rapl:0", energy=0)
    dram = make_domain(tmp_path, "dram", "intel-rapl:0:1", energy=0)
    make_domain(tmp_path, "core", "intel-rapl:0:0", energy=0)
    doms = rapl_domains()
    assert [d.name for d in doms] == ["package-0", "dram"]
    meter = RaplMeter(doms)
    meter.start()
    (pkg / "energy_uj").write_text("4000000\n")  # 4 J
    (dram / "energy_uj").write_text("1000000\n")  # 1 J
    res = meter.stop(runs=1000, timed_seconds=1.0, latency_s=0.001)
    assert res.energy_mj == pytest.approx(5.0)  # 5 J over 1000 runs
    assert "package-0+dram" in res.note


def test_rapl_without_read_permission_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))
    d = make_domain(tmp_path, "package-0", "intel-rapl:0", energy=0)
    (d / "energy_uj").unlink()
    (d / "energy_uj").mkdir()  # reading it raises an OSError, as a root-only file does for a user
    assert rapl_domains() == []
    with pytest.raises(Exception, match="'rapl' is not available"):
        open_meter("rapl", get_target("cpu"))


def test_ina3221_rails_and_exact_energy(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))
    make_hwmon(tmp_path, {1: ("VDD_IN", 5000, 1200), 2: ("VDD_CPU_GPU_CV", 5000, 400), 3: ("NC", 0, 0)})
    make_hwmon(tmp_path, {1: ("other", 1, 1)}, name="nct6775", idx=1)  # not an INA3221
    rails = find_rails()
    assert [r.name for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV"]
    assert rails[0].watts() == pytest.approx(6.0) and rails[1].watts() == pytest.approx(2.0)
    meter = open_meter("auto", get_target("cpu"))  # auto prefers the board sensor
    assert meter.name == "ina3221" and meter.total.name == "VDD_IN"
    meter.sampler.period_s = 0.005
    meter.start()
    import time

    time.sleep(0.05)
    res = meter.stop(runs=10, timed_seconds=0.05, latency_s=0.005)
    # constant 6 W on VDD_IN: energy is exactly 6 W x window, shared by 10 runs
    assert res.source == "measured"
    assert res.energy_mj == pytest.approx(6.0 * res.window_s / 10 * 1000)
    assert res.mean_power_w == pytest.approx(6.0)
    assert "VDD_IN 6.00 W" in res.note and "VDD_CPU_GPU_CV 2.00 W" in res.note
    assert meter.idle_power_w(0.02) == pytest.approx(6.0)


def test_ina3221_unreadable_channel_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))
    hw = make_hwmon(tmp_path, {1: ("VDD_IN", 5000, 1000), 2: ("VDD_SOC", 5000, 100)})
    (hw / "curr2_input").unlink()
    assert [r.name for r in find_rails()] == ["VDD_IN"]


class FakeNvml(types.ModuleType):
    def __init__(self, counter: bool):
        super().__init__("pynvml")
        self.counter = counter
        self.energy = [1_000, 3_000]  # mJ since driver load, read at start and stop

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return "gpu0"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.counter:
            raise RuntimeError("NotSupported")
        return self.energy.pop(0) if len(self.energy) > 1 else self.energy[0]  # last value repeats

    def nvmlDeviceGetPowerUsage(self, h):
        return 75_000  # mW


def test_nvml_energy_counter(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))  # no INA3221/RAPL in this tree
    fake = FakeNvml(counter=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = open_meter("auto", get_target("cpu"))
    assert meter.name == "nvml"
    fake.energy = [1_000, 3_000]  # read at start and at stop
    meter.start()
    res = meter.stop(runs=4, timed_seconds=0.1, latency_s=0.025)
    assert res.energy_mj == pytest.approx(2_000 / 4)  # 2 J over 4 runs = 500 mJ each


def test_nvml_power_sampling_when_no_counter(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(counter=False))
    meter = open_meter("nvml", get_target("cpu"))
    meter.sampler.period_s = 0.005
    meter.start()
    import time

    time.sleep(0.03)
    res = meter.stop(runs=3, timed_seconds=0.03, latency_s=0.01)
    assert res.energy_mj == pytest.approx(75.0 * res.window_s / 3 * 1000)
