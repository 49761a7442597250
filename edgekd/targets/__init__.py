"""The device catalogue: one YAML file per target, validated into a `Target` record.

Built-in targets ship in this folder; users add their own by dropping `NAME.yaml` files into a
folder named by the `EDGEKD_TARGETS_PATH` environment variable (os.pathsep-separated)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

import psutil
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from ..errors import TargetError
from ..registry import close_matches

_BUILTIN_DIR = Path(__file__).parent
LOCAL_TARGETS = ("cpu", "nvidia-gpu")


class PowerMode(BaseModel):
    name: str
    watts: float = Field(gt=0, description="power drawn by the device under inference load, W")


class Target(BaseModel):
    """A device that models are optimised for (DESIGN.md section 4)."""

    name: str
    device_class: Literal["cpu", "gpu", "jetson", "drone"]
    description: str = ""
    aliases: list[str] = []
    runtimes: list[str]
    memory_budget_mb: float | None = Field(default=None, gt=0)
    power_modes: list[PowerMode] = []
    default_power_mode: str | None = None
    peak_gflops: dict[str, float] = {}
    memory_bandwidth_gbps: float | None = None
    default_budget_ms: float = Field(gt=0)
    sources: list[str] = []
    host: dict[str, object] = {}  # filled in for the local host: cores, memory, ISA

    @model_validator(mode="after")
    def _power_mode_exists(self) -> Target:
        names = [m.name for m in self.power_modes]
        if self.default_power_mode is not None and self.default_power_mode not in names:
            raise ValueError(f"default_power_mode {self.default_power_mode!r} is not one of the power modes {names}")
        return self

    @property
    def is_local(self) -> bool:
        """Targets measured on this machine itself; the others need an agent on the device."""
        return self.name in LOCAL_TARGETS

    def power_w(self) -> float | None:
        """Power of the default power mode (the first one when none is named), or None."""
        for mode in self.power_modes:
            if mode.name == self.default_power_mode:
                return mode.watts
        return self.power_modes[0].watts if self.power_modes else None


def _search_dirs() -> list[Path]:
    extra = os.environ.get("EDGEKD_TARGETS_PATH", "")
    dirs = [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs + [_BUILTIN_DIR]  # user folders first: a user file may replace a built-in


def _load_file(path: Path) -> Target:
    try:
        raw = yaml.safe_load(path.read_text())
        return Target.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TargetError(f"target file {path} is invalid ({first}); fix or remove it") from None


def catalogue() -> dict[str, Target]:
    """Every known target by name (user folders override built-ins of the same name)."""
    found: dict[str, Target] = {}
    for folder in reversed(_search_dirs()):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            target = _load_file(path)
            found[target.name] = target
    return found


def _cpu_mhz() -> float | None:
    freq = psutil.cpu_freq()
    if freq and (freq.max or freq.current):
        return float(freq.max or freq.current)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def fp32_flops_per_cycle(isa: list[str]) -> int:
    """Peak fp32 FLOP per cycle per core: two FMA pipes of the widest vector unit."""
    if "avx512f" in isa:
        return 64
    if "avx2" in isa or "fma" in isa:
        return 32
    if "asimd" in isa or "neon" in isa:
        return 16
    return 8


def _detect_host(target: Target) -> Target:
    mem = psutil.virtual_memory()
    isa = _cpu_flags()
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    mhz = _cpu_mhz()
    host = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "physical_cores": cores,
        "logical_cores": psutil.cpu_count(logical=True),
        "memory_total_mb": round(mem.total / 2**20),
        "isa_features": isa,
        "cpu_mhz": mhz,
    }
    update: dict[str, object] = {"host": host}
    if target.memory_budget_mb is None:
        # a model may use at most half of what is free now: the rest belongs to the application
        update["memory_budget_mb"] = round(mem.available / 2**20 / 2)
    if "fp32" not in target.peak_gflops and mhz:
        fpc = fp32_flops_per_cycle(isa)
        update["peak_gflops"] = {**target.peak_gflops, "fp32": round(cores * mhz / 1000 * fpc, 1)}
        update["sources"] = [*target.sources, f"peak fp32 detected: {cores} cores x {mhz:.0f} MHz x {fpc} FLOP/cycle"]
    return target.model_copy(update=update)


def _detect_gpu(target: Target) -> Target:
    """Fill in the local NVIDIA GPU's name, memory and power limit from NVML, when there is one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("EDGEKD_GPU_INDEX", "0")))
        name = pynvml.nvmlDeviceGetName(h)
        total_mb = pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20
        watts = pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
    except Exception:  # no nvidia-ml-py, no driver, no GPU
        return target
    return target.model_copy(update={
        "description": f"{name} (detected)",
        "memory_budget_mb": target.memory_budget_mb or round(total_mb * 0.8),
        "power_modes": target.power_modes or [PowerMode(name="power-limit", watts=watts)],
        "host": {"gpu": name if isinstance(name, str) else name.decode(), "memory_total_mb": round(total_mb)},
    })


def _cpu_flags() -> list[str]:
    wanted = {"avx", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "fma", "neon", "asimd", "sve"}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return sorted(wanted & set(line.split(":", 1)[1].split()))
    return []


def get_target(name: str) -> Target:
    """The target called `name` (or an alias of it); the host CPU target is detected live."""
    targets = catalogue()
    for target in targets.values():
        if name == target.name or name in target.aliases:
            detect = {"cpu": _detect_host, "nvidia-gpu": _detect_gpu}.get(target.name)
            return detect(target) if detect else target
    known = ", ".join(sorted(targets))
    names = [n for t in targets.values() for n in (t.name, *t.aliases)]
    raise TargetError(
        f"unknown target {name!r}; {close_matches(name, names)}choose one of: {known} "
        "(or add NAME.yaml to a folder listed in EDGEKD_TARGETS_PATH)"
    )
