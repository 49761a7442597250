"""The measurement method shared by every runtime: warm-up, then timed runs until both a
minimum count and a minimum duration are reached; peak memory in a fresh child process;
energy from a meter over the timed window. Runtimes only say how to load and run once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..errors import ProfilingError
from ..registry import Registry
from ..targets import Target
from .energy import open_meter
from .measurement import Measurement, latency_stats


class RuntimeAdapter(Protocol):
    """What a runtime contributes: its version, and a loader returning a callable that runs
    one batch and returns the model's first output as a numpy array."""

    name: str
    device: str

    def version(self) -> str: ...

    def load(self, model_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]: ...


PROFILERS: Registry[RuntimeAdapter] = Registry("runtime")


@dataclass(frozen=True)
class ProfileSettings:
    threads: int
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 1.0
    measure_memory: bool = True
    energy_meter: str = "auto"
    seed: int = 0


def time_runs(run_once: Callable[[], Any], *, warmup: int, min_runs: int, min_seconds: float,
              on_start: Callable[[], None] | None = None) -> list[float]:
    """Latencies in ms: `warmup` untimed runs, then (after `on_start`) timed runs until
    n >= min_runs and the timed total >= min_seconds."""
    for _ in range(warmup):
        run_once()
    if on_start:
        on_start()
    samples: list[float] = []
    elapsed = 0.0
    while len(samples) < min_runs or elapsed < min_seconds:
        t0 = time.perf_counter()
        run_once()
        dt = time.perf_counter() - t0
        samples.append(dt * 1000)
        elapsed += dt
    return samples


def peak_memory_child(runtime: str, model_path: Path, shape: list[int], threads: int, runs: int = 10) -> float:
    """Peak resident memory (MB) that loading and running the model adds to a fresh process."""
    cmd = [sys.executable, "-m", "edgekd.profilers.memory_probe", runtime, str(model_path),
           ",".join(map(str, shape)), str(threads), str(runs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProfilingError(f"the memory probe for {model_path} with {runtime} failed: {tail}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return max(0.0, res["peak_mb"] - res["baseline_mb"])


def profile_model(model_path: Path, target: Target, runtime: str, input_shape: list[int],
                  settings: ProfileSettings) -> Measurement:
    """Measure `model_path` (ONNX) with `runtime` on this host, for `target`."""
    adapter = PROFILERS.get(runtime)
    try:
        run = adapter.load(model_path, settings.threads)
    except ProfilingError:
        raise
    except Exception as exc:  # runtimes raise their own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ProfilingError(f"{runtime} cannot load {model_path}: {first}") from None
    x = np.random.default_rng(settings.seed).random(input_shape, dtype=np.float32)
    meter = open_meter(settings.energy_meter, target)
    samples = time_runs(lambda: run(x), warmup=settings.warmup, min_runs=settings.min_runs,
                        min_seconds=settings.min_seconds, on_start=meter.start)
    stats = latency_stats(samples, settings.warmup)
    energy = meter.stop(runs=stats.n, timed_seconds=stats.total_s, mean_latency_s=stats.mean / 1000)
    peak = peak_memory_child(runtime, model_path, input_shape, settings.threads) if settings.measure_memory else None
    return Measurement(
        target=target.name, runtime=runtime, runtime_version=adapter.version(), device=adapter.device,
        precision="fp32", batch=input_shape[0], input_shape=input_shape, threads=settings.threads,
        latency_ms=stats, peak_memory_mb=None if peak is None else round(peak, 3),
        model_size_mb=model_path.stat().st_size / 2**20,
        energy_mj=energy.energy_mj, mean_power_w=energy.mean_power_w, energy_meter=energy.meter,
        source={"latency": "measured", "model_size": "measured",
                **({"peak_memory": "measured"} if peak is not None else {}),
                **({"energy": energy.source} if energy.energy_mj is not None else {})},
        notes=[energy.note] if energy.note else [],
    )
