"""Facts of the machine edgekd runs on: how many CPUs this process may use (affinity and cgroup
quota, not the physical count), default thread counts, who the host is and what state its
clocks are in, and which software versions a run used. A leaf: the agent's jobs, the CLI and
the pipeline all read it. Paths are read under `root` so that tests can give a fake tree."""

from __future__ import annotations

import math
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path

import psutil

from . import __version__

ROOT = Path("/")


def read_fact(path: Path) -> str | None:
    """The stripped text of a kernel or sysfs file, or None where it cannot be read."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_limit(root: Path = ROOT) -> float | None:
    """CPUs the cgroup quota allows (cgroup v2 cpu.max, else v1 cfs quota/period); None: no quota."""
    v2 = read_fact(root / "sys/fs/cgroup/cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    v1 = next((d for d in (root / "sys/fs/cgroup/cpu", root / "sys/fs/cgroup/cpu,cpuacct")
               if (d / "cpu.cfs_quota_us").exists()), None)
    quota_s = read_fact(v1 / "cpu.cfs_quota_us") if v1 else None
    period_s = read_fact(v1 / "cpu.cfs_period_us") if v1 else None
    if quota_s and period_s and int(quota_s) > 0 and int(period_s) > 0:
        return int(quota_s) / int(period_s)
    return None


def usable_cpus(root: Path = ROOT, affinity: set[int] | None = None) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup's CPU quota."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    n = max(1, len(affinity))
    quota = cgroup_cpu_limit(root)
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return n


def default_threads(root: Path = ROOT, affinity: set[int] | None = None) -> int:
    """Inference threads: physical cores, no more than the usable CPUs; at least 1."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, min(physical, usable_cpus(root, affinity)))


def default_train_threads(root: Path = ROOT, affinity: set[int] | None = None, load1: float | None = None) -> int:
    """Training threads: the inference default less the CPUs other work keeps busy now (the
    1-minute load), at least 1. PyTorch's eager kernels slow down many times over when their
    threads outnumber the free CPUs, while one thread fewer costs little on a quiet host."""
    if load1 is None:
        text = read_fact(root / "proc/loadavg")
        load1 = float(text.split()[0]) if text else 0.0
    return max(1, default_threads(root, affinity) - round(load1))


def provenance(root: Path = ROOT) -> dict[str, str | float | int | None]:
    """Who measured: host, CPU, usable CPUs, the CPU governor and current frequency, thermal
    throttling counts, and on a Jetson its power mode (nvpmodel) and GPU clock. A fact that is not
    readable here is None, never guessed."""
    cpu = root / "sys/devices/system/cpu/cpu0"
    freq = read_fact(cpu / "cpufreq/scaling_cur_freq")
    throttle = read_fact(cpu / "thermal_throttle/core_throttle_count")
    model = None
    info = read_fact(root / "proc/cpuinfo") or ""
    for line in info.splitlines():
        if line.lower().startswith(("model name", "hardware")):
            model = line.split(":", 1)[1].strip()
            break
    jetson = read_fact(root / "proc/device-tree/model") if (root / "proc/device-tree/model").exists() else None
    return {
        "host": socket.gethostname(), "cpu": model or platform.processor() or None, "usable_cpus": usable_cpus(root),
        "cpu_quota": cgroup_cpu_limit(root), "governor": read_fact(cpu / "cpufreq/scaling_governor"),
        "cpu_mhz": round(int(freq) / 1000, 1) if freq and freq.isdigit() else None,
        "throttle_count": int(throttle) if throttle and throttle.isdigit() else None,
        "board": jetson.rstrip("\x00") if jetson else None, "power_mode": nvpmodel_mode(root) if jetson else None,
        "gpu_mhz": _gpu_mhz(root) if jetson else None,
    }


def nvpmodel_mode(root: Path = ROOT) -> str | None:
    """The Jetson power mode, as `nvpmodel -q` names it (e.g. '15W'); None off a Jetson."""
    status = read_fact(root / "var/lib/nvpmodel/status")  # written by nvpmodel: "pmode:0002 fmode:..."
    if root == ROOT and shutil.which("nvpmodel"):
        try:
            out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for line in out.splitlines():
            if "Power Mode" in line:
                return line.split(":", 1)[1].strip()
    return status.split()[0] if status else None


def _gpu_mhz(root: Path) -> float | None:
    devfreq = root / "sys/class/devfreq"
    for f in [f for pattern in ("*gpu*", "*.gv11b", "*.ga10b") for f in sorted(devfreq.glob(pattern + "/cur_freq"))]:
        v = read_fact(f)
        if v and v.isdigit():
            return round(int(v) / 1e6, 1)
    return None


def software_versions() -> dict[str, str]:
    """Versions of edgekd, Python, the platform and every runtime a report's figures depend on."""
    import numpy
    import onnx
    import onnxruntime
    import openvino
    import torch

    return {
        "edgekd": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "numpy": numpy.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version(),
    }
