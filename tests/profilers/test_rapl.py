from pathlib import Path

import pytest

from edgekd.profilers.energy import open_meter
from edgekd.profilers.energy.rapl import RaplMeter, package_domains
from edgekd.targets import get_target


def make_domain(root: Path, name: str, node: str, energy: int, max_range: int = 1_000_000) -> Path:
    d = root / "sys/class/powercap" / node
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


def test_rapl_energy_with_wraparound(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))
    p0 = make_domain(tmp_path, "package-0", "intel-rapl:0", energy=999_000, max_range=999_999)
    p1 = make_domain(tmp_path, "package-1", "intel-rapl:1", energy=100)
    make_domain(tmp_path, "core", "intel-rapl:0:0", energy=5)  # sub-domain: not counted
    doms = package_domains()
    assert [d.name for d in doms] == ["package-0", "package-1"]
    meter = RaplMeter(doms)
    meter.start()
    (p0 / "energy_uj").write_text("500\n")  # wrapped: 999_000 -> 999_999 -> 0 -> 500 = 1_500 uJ
    (p1 / "energy_uj").write_text("2100\n")  # +2000 uJ
    res = meter.stop(runs=10, timed_seconds=0.01, latency_s=0.001)
    assert res.source == "measured" and res.meter == "rapl"
    assert res.energy_mj == pytest.approx(3_500 / 1e6 / 10 * 1000)  # 0.35 mJ per inference


def test_unreadable_rapl_falls_back_to_labelled_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_SYSFS_ROOT", str(tmp_path))
    d = make_domain(tmp_path, "package-0", "intel-rapl:0", energy=1)
    (d / "energy_uj").unlink()  # what a non-readable counter looks like to the reader
    assert package_domains() == []
    meter = open_meter("auto", get_target("cpu"))
    meter.start()
    res = meter.stop(runs=100, timed_seconds=0.2, latency_s=0.002)
    assert res.meter == "estimate" and res.source == "predicted"
    assert res.energy_mj == pytest.approx(15.0 * 0.002 * 1000)  # cpu target power x latency
    with pytest.raises(Exception, match="not available"):
        open_meter("rapl", get_target("cpu"))
