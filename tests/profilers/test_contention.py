"""Contention: CPU pressure read over every timed window (fake /proc trees and real busy-loop
processes beside the profiler), repeats and the `contended` mark, the teacher timed beside a
candidate, usable CPUs from affinity and cgroup quota, and the host's provenance."""

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from edgekd.convert.onnx import to_onnx
from edgekd.host import cgroup_cpu_limit, default_threads, default_train_threads, provenance, usable_cpus
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.pipeline.stages import contended_budget_note
from edgekd.profilers import MeasurementCache, ProfileSettings, profile_model
from edgekd.profilers.base import Reference
from edgekd.profilers.contention import PressureReader
from edgekd.search.candidates import costs_of
from edgekd.search.objective import Costs, CostWeights, hardware_cost
from edgekd.targets import get_target

SHAPE = [1, 3, 16, 16]
FAST = ProfileSettings(threads=1, warmup=2, min_runs=10, min_seconds=0.2, measure_memory=False, energy_meter="none",
                       attempts=2, retry_pause_s=0.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    small = to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 4), d / "small.onnx", SHAPE)
    big = to_onnx(build_model(ArchSpec(width=1.0, depth=2), 3, 4), d / "big.onnx", SHAPE)
    return small, big


def fake_proc(root, psi_total: int | None = 0, busy: int = 100, steal: int = 0, idle: int = 1000, load1: float = 0.1):
    (root / "proc/pressure").mkdir(parents=True, exist_ok=True)
    if psi_total is not None:
        _put(root / "proc/pressure/cpu", f"some avg10=1.50 avg60=0.00 avg300=0.00 total={psi_total}\n"
                                         "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    # user nice system idle iowait irq softirq steal
    _put(root / "proc/stat", f"cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")
    _put(root / "proc/loadavg", f"{load1} 0.5 0.5 1/100 123\n")


def _put(path, text: str) -> None:
    """Whole or not at all, as the kernel's files read: a reader never sees a half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_psi_pressure_over_the_window_marks_it_contended(tmp_path):
    hz = os.sysconf("SC_CLK_TCK")
    fake_proc(tmp_path, psi_total=0, busy=0)
    reader = PressureReader(usable_cpus=2, root=tmp_path)
    reader.start()
    time.sleep(0.2)
    fake_proc(tmp_path, psi_total=160_000, busy=int(0.3 * hz))  # 0.16 s of waiting; others busy
    p = reader.stop()
    assert p.source == "psi" and p.before == pytest.approx(0.015) and 0.5 < p.during <= 0.8
    assert p.others > 0.1 and p.contended and "waited for a CPU" in p.contended


def test_pressure_from_our_own_threads_alone_is_not_contention(tmp_path):
    """Two runtimes timed in turn keep the idle one's threads spinning: PSI reads ~0.5 on a quiet
    host. Without other processes using the CPUs, that is not contention."""
    fake_proc(tmp_path, psi_total=0, busy=0)
    reader = PressureReader(usable_cpus=2, root=tmp_path)
    reader.start()
    time.sleep(0.2)
    fake_proc(tmp_path, psi_total=100_000, busy=0)  # waiting, but nobody else ran
    p = reader.stop()
    assert p.during > 0.3 and p.others == 0 and p.contended is None


def test_a_quiet_window_is_not_contended(tmp_path):
    fake_proc(tmp_path, psi_total=5_000)
    reader = PressureReader(usable_cpus=2, root=tmp_path)
    reader.start()
    time.sleep(0.1)
    p = reader.stop()  # no further waiting
    assert p.during == 0 and p.contended is None


def test_without_psi_other_processes_cpu_time_is_read(tmp_path):
    hz = os.sysconf("SC_CLK_TCK")
    fake_proc(tmp_path, psi_total=None, busy=0)
    reader = PressureReader(usable_cpus=2, root=tmp_path)
    reader.start()
    time.sleep(0.2)
    fake_proc(tmp_path, psi_total=None, busy=int(0.4 * hz))  # 0.4 CPU-s of others' work in 0.2 s on 2 CPUs
    p = reader.stop()
    assert p.source == "cpu-time" and p.during > 0.5 and p.others == p.during and "other processes" in p.contended


def test_steal_time_marks_a_window_contended(tmp_path):
    fake_proc(tmp_path, psi_total=0, busy=100, steal=0, idle=1000)
    reader = PressureReader(usable_cpus=2, root=tmp_path)
    reader.start()
    fake_proc(tmp_path, psi_total=0, busy=150, steal=20, idle=1030)  # 20 of 100 ticks stolen
    p = reader.stop()
    assert p.steal == pytest.approx(0.2) and "hypervisor stole 20%" in p.contended


class PressureWriter:
    """A fake /proc whose PSI counter grows as if some task waited `share` of the time."""

    def __init__(self, root, share: float):
        self.root, self.share, self.stop = root, share, threading.Event()
        fake_proc(root, psi_total=0, busy=1000)
        self.t0 = time.perf_counter()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        hz = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            elapsed = time.perf_counter() - self.t0  # and other processes busy on both CPUs all along
            fake_proc(self.root, psi_total=int(elapsed * 1e6 * self.share), busy=int(elapsed * 2 * hz) + 1000)
            time.sleep(0.005)


def test_a_contended_measurement_is_repeated_marked_and_never_cached(tmp_path, models):
    small, _ = models
    writer = PressureWriter(tmp_path / "root", share=0.9)
    try:
        cache = MeasurementCache(tmp_path / "m.sqlite")
        m = profile_model(small, get_target("cpu"), "onnxruntime", SHAPE, replace(FAST, attempts=3), cache,
                          pressure_root=tmp_path / "root")
    finally:
        writer.stop.set()
    assert m.conditions.attempts == 3 and m.conditions.pressure.during > 0.5
    assert m.contended and "waited for a CPU" in m.contended
    assert any(n.startswith("contended after 3 timed windows") for n in m.notes)
    assert len(cache) == 0  # a contended figure is kept for the run, never cached


def test_busy_loops_pinned_beside_the_profiler_are_detected(tmp_path, models):
    """Real contention: one busy-loop process per CPU this process may use, pinned to those CPUs."""
    small, _ = models
    cpus = sorted(os.sched_getaffinity(0))
    code = f"import os; os.sched_setaffinity(0, {cpus!r})\nwhile True: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in cpus]
    try:
        time.sleep(0.5)
        m = profile_model(small, get_target("cpu"), "onnxruntime", SHAPE, replace(FAST, threads=len(cpus)))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert m.conditions.attempts == 2 and m.contended is not None
    assert m.conditions.pressure.during > 0.2


def test_the_teacher_timed_beside_gives_the_latency_ratio(tmp_path, models):
    small, big = models
    fake_proc(tmp_path, psi_total=0)
    m = profile_model(small, get_target("cpu"), "onnxruntime", SHAPE, FAST, beside=Reference(big, SHAPE),
                      pressure_root=tmp_path)
    ref = m.conditions.reference
    assert ref.model == "big.onnx" and ref.p10 <= ref.p50 <= ref.p90
    assert 0 < ref.ratio_p10 < 1 and 0 < ref.ratio_p50 < 1  # the small model beside the big one
    assert "ratio to big.onnx from a window of both" in m.timing and m.latency_ms.n >= 10
    costs = costs_of(m, 0.0)
    assert costs.latency_ratio == ref.ratio_p10  # the runs nothing interrupted, in one window
    teacher = Costs(latency_ms=1000.0, peak_memory_mb=None, energy_mj=None)  # a figure from another window
    hw = hardware_cost(costs, teacher, CostWeights())
    assert hw.ratios["latency"] == ref.ratio_p10  # the same-window ratio, not p50 / 1000 ms


def test_usable_cpus_follow_affinity_and_the_cgroup_quota(tmp_path):
    assert usable_cpus(tmp_path, affinity={0, 1, 2, 3}) == 4  # no cgroup files: affinity alone
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5 and usable_cpus(tmp_path, affinity={0, 1, 2, 3}) == 1
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path, affinity={0, 1, 2, 3}) == 4
    (tmp_path / "sys/fs/cgroup/cpu.max").unlink()
    (tmp_path / "sys/fs/cgroup/cpu").mkdir()
    (tmp_path / "sys/fs/cgroup/cpu/cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "sys/fs/cgroup/cpu/cpu.cfs_period_us").write_text("100000")
    assert usable_cpus(tmp_path, affinity=set(range(8))) == 2
    assert default_threads(tmp_path, affinity=set(range(8))) <= 2


def test_training_threads_leave_the_cpus_other_work_holds(tmp_path):
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("400000 100000\n")
    n = default_threads(tmp_path, affinity=set(range(4)))
    assert default_train_threads(tmp_path, affinity=set(range(4)), load1=0.1) == n
    assert default_train_threads(tmp_path, affinity=set(range(4)), load1=1.6) == max(1, n - 2)
    assert default_train_threads(tmp_path, affinity=set(range(4)), load1=9.0) == 1


def test_provenance_reads_governor_clocks_throttling_and_a_jetsons_power_mode(tmp_path):
    cpu = tmp_path / "sys/devices/system/cpu/cpu0"
    (cpu / "cpufreq").mkdir(parents=True)
    (cpu / "thermal_throttle").mkdir()
    (cpu / "cpufreq/scaling_governor").write_text("schedutil\n")
    (cpu / "cpufreq/scaling_cur_freq").write_text("1510400\n")
    (cpu / "thermal_throttle/core_throttle_count").write_text("3\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    (tmp_path / "var/lib/nvpmodel").mkdir(parents=True)
    (tmp_path / "var/lib/nvpmodel/status").write_text("pmode:0001 fmode:quiet\n")
    (tmp_path / "sys/class/devfreq/17000000.ga10b").mkdir(parents=True)
    (tmp_path / "sys/class/devfreq/17000000.ga10b/cur_freq").write_text("624750000\n")
    p = provenance(tmp_path)
    assert p["governor"] == "schedutil" and p["cpu_mhz"] == 1510.4 and p["throttle_count"] == 3
    assert p["board"] == "NVIDIA Jetson Orin Nano Developer Kit" and p["power_mode"] == "pmode:0001"
    assert p["gpu_mhz"] == 624.8 and p["cpu"].startswith("ARMv8")
    bare = provenance(tmp_path / "nothing")
    assert bare["governor"] is None and bare["board"] is None and bare["host"]  # unreadable is None, never guessed


def test_the_selection_reason_names_a_budget_decision_on_a_contended_figure():
    def cand(name, meets, contended):
        m = SimpleNamespace(contended="pressure" if contended else None, latency_ms=SimpleNamespace(p90=1.234))
        return SimpleNamespace(name=name, meets_budget=meets, measurement=m)

    assert contended_budget_note([cand("a", True, False), cand("b", False, False)], "a") == ""
    note = contended_budget_note([cand("a", True, True), cand("b", False, True), cand("c", True, True)], "a")
    assert "CONTENDED" in note and "a (p90 1.234 ms, within budget)" in note and "b (p90 1.234 ms, over budget)" in note
    assert "c (" not in note  # an unselected one within budget decided nothing
