"""Every registered energy meter, walked as a set: on a fake sysfs tree (and a fake NVML) where
its sensor exists, it brackets a timed window and returns energy per inference with a source;
where its sensor is absent it declines (None) instead of inventing a figure."""

import sys

import pytest

from edgekd.profilers.energy import METERS
from edgekd.targets import get_target

from .test_rapl import make_domain
from .test_sensors import FakeNvml, make_hwmon

EXPECTED_SOURCE = {"rapl": "measured", "ina3221": "measured", "nvml": "measured", "estimate": "predicted"}


def sensor_tree(name, root, monkeypatch):
    """The sensor of meter `name` under `root`; the counters the window will advance."""
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(root))
    if name == "rapl":
        return make_domain(root, "package-0", "intel-rapl:0", energy=0)
    if name == "ina3221":
        return make_hwmon(root, {1: ("VDD_IN", 5000, 1000)})
    if name == "nvml":
        monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(counter=True))
    return None


@pytest.mark.parametrize("name", METERS.names())
def test_every_meter_brackets_a_window(name, tmp_path, monkeypatch):
    sensor = sensor_tree(name, tmp_path, monkeypatch)
    meter = METERS.get(name)(get_target("cpu"))
    assert meter is not None and meter.name == name
    meter.start()
    if name == "rapl":
        (sensor / "energy_uj").write_text("2000000\n")  # 2 J in the window
    res = meter.stop(runs=10, timed_seconds=0.05, latency_s=0.005)
    assert res.meter == name
    if name == "none":
        assert res.energy_mj is None
        return
    assert res.source == EXPECTED_SOURCE[name] and res.energy_mj is not None and res.energy_mj >= 0
    if name == "rapl":
        assert res.energy_mj == pytest.approx(2000 / 10)  # 2 J over 10 runs


@pytest.mark.parametrize("name", ["rapl", "ina3221"])
def test_a_meter_without_its_sensor_declines(name, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))  # an empty tree
    assert METERS.get(name)(get_target("cpu")) is None
