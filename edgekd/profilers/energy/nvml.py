"""NVIDIA GPU energy through NVML (nvidia-ml-py): the total-energy counter (Volta and newer),
else power samples integrated over the window."""

from __future__ import annotations

import os
import time

from ...targets import Target
from . import METERS, EnergyResult
from .sampling import SampledMeter

SAMPLE_PERIOD_S = 0.02


def _nvml():
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no GPU: pynvml raises NVMLError subclasses
        return None
    return pynvml


class NvmlEnergyCounter:
    name = "nvml"

    def __init__(self, nvml, handle):
        self.nvml, self.handle = nvml, handle
        self._e0 = 0
        self._t0 = 0.0

    def _mj(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))  # mJ since driver load

    def idle_power_w(self, seconds: float) -> float | None:
        e0, t0 = self._mj(), time.perf_counter()
        time.sleep(seconds)
        return (self._mj() - e0) / 1000 / (time.perf_counter() - t0)

    def start(self) -> None:
        self._e0, self._t0 = self._mj(), time.perf_counter()

    def stop(self, *, runs: int, timed_seconds: float, latency_s: float) -> EnergyResult:
        joules = (self._mj() - self._e0) / 1000
        wall = time.perf_counter() - self._t0
        return EnergyResult(
            energy_mj=joules / runs * 1000, mean_power_w=joules / wall if wall > 0 else None, meter="nvml",
            source="measured", window_s=wall,
            note=f"NVML total-energy counter of GPU {os.environ.get('EDGEKD_GPU_INDEX', '0')} over a {wall:.2f} s "
                 "window (GPU board only, not the host)",
        )


class NvmlPowerSampler(SampledMeter):
    name = "nvml"

    def __init__(self, nvml, handle):
        super().__init__(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000, SAMPLE_PERIOD_S)
        self.source_note = "NVML board power (GPU only)"


@METERS.register("nvml")
def _open(_target: Target):
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("EDGEKD_GPU_INDEX", "0")))
    except Exception:
        return None
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return NvmlEnergyCounter(nvml, handle)
    except Exception:  # NVMLError_NotSupported on pre-Volta GPUs
        return NvmlPowerSampler(nvml, handle)
