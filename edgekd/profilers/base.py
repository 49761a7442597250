"""The measurement method shared by every runtime: warm-up, then timed runs until both a
minimum count and a minimum duration are reached; peak memory in a fresh child process;
energy from a meter over the timed window; identical requests answered from the cache.
Runtimes only say how to load a model and run it once (NNCF-style thin backends)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ProfilingError
from ..files import first_line
from ..registry import Registry
from ..targets import Target
from .cache import MeasurementCache, file_sha256
from .contention import Pressure, PressureReader
from .energy import EnergyResult, Meter, open_meter
from .measurement import Conditions, LatencyStats, Measurement, ReferenceWindow, latency_stats
from .settings import ProfileSettings


@dataclass
class LoadedModel:
    """A model ready to run: `run` takes one input batch and returns the first output.
    Runtimes with a device clock give `timed_run` (ms by device events) as well."""

    run: Callable[[np.ndarray], np.ndarray]
    timed_run: Callable[[np.ndarray], float] | None = None
    device_memory_mb: float | None = None
    artifact_size_mb: float | None = None  # e.g. a TensorRT engine built from the ONNX
    notes: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None
    execution: dict[str, str] = field(default_factory=dict)  # runtime settings it runs with (e.g. precision hint)


class Runtime(Protocol):
    """How one runtime loads a model and runs it once; the measurement method is shared
    (`profile_model`). `unavailable()` is cheap and never raises: None when the runtime can run
    here, else the reason. `load` honours `threads` (intra-op, sequential execution), returns a
    `LoadedModel` whose `close()` the caller calls (in a finally), and raises for a model the
    runtime refuses. `version()` is the runtime's own version string, part of the cache key."""

    @property
    def name(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def precisions(self) -> tuple[str, ...]: ...

    def unavailable(self) -> str | None:
        """None when this runtime can run here, else the reason it cannot."""

    def version(self) -> str: ...

    def load(self, model_path: Path, threads: int, precision: str = "fp32",
             shape: list[int] | None = None) -> LoadedModel: ...


PROFILERS: Registry[Runtime] = Registry("runtime")


def time_runs(run_once: Callable[[], float | None], *, warmup: int, min_runs: int, min_seconds: float,
              on_start: Callable[[], None] | None = None) -> list[float]:
    """Latencies in ms: `warmup` untimed runs, then (after `on_start`) timed runs until
    n >= min_runs and the timed total >= min_seconds. A `run_once` that returns a number
    reports its own latency (a device clock); otherwise the host clock times it."""
    return time_interleaved([run_once], warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                            on_start=on_start)[0]


def time_interleaved(runs: list[Callable[[], float | None]], *, warmup: int, min_runs: int, min_seconds: float,
                     on_start: Callable[[], None] | None = None, burst: int = 10) -> list[list[float]]:
    """Latencies in ms of several models timed in one window: bursts of `burst` runs of each in
    turn (A, B, A, B ...), until every one has n >= min_runs and the first one's timed total is
    >= min_seconds. Each burst of several models starts with one untimed run: the first run after
    a switch pays for cold caches and the other runtime's threads, which no deployment of one
    model sees."""
    for run_once in runs:
        for _ in range(warmup):
            run_once()
    if on_start:
        on_start()
    samples: list[list[float]] = [[] for _ in runs]
    elapsed = 0.0
    step = burst if len(runs) > 1 else 1
    while min(len(s) for s in samples) < min_runs or elapsed < min_seconds:
        for i, run_once in enumerate(runs):
            if len(runs) > 1:
                run_once()  # the switch's cost, untimed (twice: threads wake, caches refill)
                run_once()
            for _ in range(step):
                t0 = time.perf_counter()
                own = run_once()
                ms = own if isinstance(own, float) else (time.perf_counter() - t0) * 1000
                samples[i].append(ms)
                if i == 0:
                    elapsed += ms / 1000
    return samples


def peak_memory_child(runtime: str, model_path: Path, shape: list[int], threads: int, precision: str,
                      runs: int = 10) -> float:
    """Peak resident memory (MB) that loading and running the model adds to a fresh process."""
    cmd = [sys.executable, "-m", "edgekd.profilers.memory_probe", runtime, str(model_path),
           ",".join(map(str, shape)), str(threads), str(runs), precision]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise ProfilingError(f"the memory probe for {model_path} with {runtime} took over 600 s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProfilingError(f"the memory probe for {model_path} with {runtime} failed: {tail}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return max(0.0, res["peak_mb"] - res["baseline_mb"])


def load_runtime(runtime: str, model_path: Path, threads: int, precision: str,
                 shape: list[int] | None = None) -> LoadedModel:
    """Load with a clear error: unknown runtime, runtime missing here, precision or model refused."""
    adapter = PROFILERS.get(runtime)
    reason = adapter.unavailable()
    if reason:
        raise ProfilingError(f"runtime {runtime} is not available here: {reason}")
    if precision not in adapter.precisions:
        raise ProfilingError(f"runtime {runtime} runs {', '.join(adapter.precisions)} models, not {precision}; "
                             "export a model of that precision instead")
    try:
        return adapter.load(model_path, threads, precision, shape)
    except ProfilingError:
        raise
    except Exception as exc:  # runtimes raise their own exception types
        raise ProfilingError(f"{runtime} cannot load {model_path}: {first_line(exc)}") from None


@dataclass(frozen=True)
class Reference:
    """A model to time beside the measured one, interleaved (the teacher, C_hw's reference)."""

    path: Path
    shape: list[int]


def profile_model(model_path: Path, target: Target, runtime: str, input_shape: list[int],
                  settings: ProfileSettings, cache: MeasurementCache | None = None,
                  beside: Reference | None = None, pressure_root: Path = Path("/")) -> Measurement:
    """Measure `model_path` with `runtime` on this host, for `target`; with a cache, identical
    model bytes and conditions are measured once and later answered as `cached`.

    The host's CPU pressure is read over every timed window; a contended window (or one whose
    spread only a busy host gives) is timed again after a pause, up to `settings.attempts`
    windows, and the least contended is kept. One still contended is marked so
    (`conditions.contended`), kept for this run and never cached. With `beside`, a further window
    times both models interleaved and records the ratios of their p10s and p50s (the model's own
    figures come from its own window: the other runtime's idle threads disturb its tail)."""
    adapter = PROFILERS.get(runtime)
    key = None
    if cache is not None and adapter.unavailable() is None:
        extra = {"beside": [file_sha256(beside.path), beside.shape]} if beside else None
        key = cache.key(model_path, target.name, runtime, adapter.version(), input_shape, settings, extra)
        hit = cache.get(key)
        if hit is not None and hit.contended is None:  # a contended figure is measured again
            return hit
    from ..host import usable_cpus

    loaded = load_runtime(runtime, model_path, settings.threads, settings.precision, input_shape)
    ref = load_runtime(runtime, beside.path, settings.threads, "fp32", beside.shape) if beside else None
    try:
        meter = open_meter(settings.energy_meter, target)
        idle_w = meter.idle_power_w(settings.idle_seconds) if settings.idle_seconds > 0 else None
        rng = np.random.default_rng(settings.seed)
        own = _once(loaded, rng.random(input_shape, dtype=np.float32))
        reader = PressureReader(usable_cpus(pressure_root), pressure_root)
        windows = _windows([own], settings, meter, reader, runtime, model_path, input_shape)
        kept = min(windows, key=lambda w: (w.contended is not None, w.pressure.during, w.stats[0].p50))
        pair = None  # the ratio's own window: the model's figures above come from a window of its own,
        if ref is not None and beside is not None:  # since a second runtime's threads disturb its tail
            pair = _timed_window([own, _once(ref, rng.random(beside.shape, dtype=np.float32))], settings,
                                 open_meter("none", target), reader, runtime, model_path, input_shape)
    finally:
        loaded.close()
        if ref is not None:
            ref.close()
    stats, energy = kept.stats[0], kept.energy
    peak = (peak_memory_child(runtime, model_path, input_shape, settings.threads, settings.precision)
            if settings.measure_memory else None)
    dynamic = None
    if energy.energy_mj is not None and idle_w is not None and energy.window_s:
        dynamic = energy.energy_mj - idle_w * energy.window_s / stats.n * 1000
    size_mb = loaded.artifact_size_mb if loaded.artifact_size_mb is not None else model_path.stat().st_size / 2**20
    conditions = _conditions(kept, len(windows), beside, pair, pressure_root)
    still = kept.contended
    tried = f" after {len(windows)} timed windows" if len(windows) > 1 else ""
    m = Measurement(
        target=target.name, runtime=runtime, runtime_version=adapter.version(), device=adapter.device,
        precision=settings.precision, batch=input_shape[0], input_shape=input_shape, threads=settings.threads,
        latency_ms=stats, peak_memory_mb=None if peak is None else round(peak, 3),
        device_memory_mb=loaded.device_memory_mb, model_size_mb=size_mb,
        energy_mj=energy.energy_mj, dynamic_energy_mj=dynamic, mean_power_w=energy.mean_power_w,
        idle_power_w=idle_w, energy_meter=energy.meter,
        source={"latency": "measured", "model_size": "measured",
                **({"peak_memory": "measured"} if peak is not None else {}),
                **({"device_memory": "measured"} if loaded.device_memory_mb is not None else {}),
                **({"energy": energy.source} if energy.energy_mj is not None else {})},
        timing=("device events (CUDA)" if loaded.timed_run else "host clock (perf_counter)")
               + (f"; ratio to {beside.path.name} from a window of both, interleaved" if beside else ""),
        notes=[n for n in [energy.note, *loaded.notes,
                           ("runs with " + ", ".join(f"{k}={v}" for k, v in loaded.execution.items())
                            if loaded.execution else None),
                           f"contended{tried}: {still}; kept for this run, not cached" if still else None] if n],
        conditions=conditions,
    )
    if cache is not None and key is not None and m.contended is None:  # contended figures are not facts
        cache.put(key, m)
    return m


@dataclass
class _Window:
    stats: list[LatencyStats]
    energy: EnergyResult
    pressure: Pressure
    contended: str | None


def _windows(runs: list[Callable[[], Any]], settings: ProfileSettings, meter: Meter, reader: PressureReader,
             runtime: str, model_path: Path, input_shape: list[int]) -> list[_Window]:
    """Timed windows until one is not contended, `settings.attempts` at most, a pause between."""
    windows: list[_Window] = []
    for attempt in range(max(1, settings.attempts)):
        if attempt:
            time.sleep(settings.retry_pause_s)  # let the other work pass
        windows.append(_timed_window(runs, settings, meter, reader, runtime, model_path, input_shape))
        if windows[-1].contended is None:
            break
    return windows


def _conditions(kept: _Window, attempts: int, beside: Reference | None, pair: _Window | None,
                root: Path) -> Conditions:
    from ..host import provenance

    reference = None
    if beside is not None and pair is not None:
        s, r = pair.stats
        reference = ReferenceWindow(model=beside.path.name, p50=r.p50, p90=r.p90, p10=r.p10 or r.p50,
                                    ratio_p50=s.p50 / r.p50, ratio_p10=(s.p10 or s.p50) / (r.p10 or r.p50))
    return Conditions(pressure=kept.pressure, attempts=attempts, contended=kept.contended, host=provenance(root),
                      reference=reference)


def _once(loaded: LoadedModel, x: np.ndarray) -> Callable[[], Any]:
    timed = loaded.timed_run
    return (lambda: timed(x)) if timed is not None else (lambda: loaded.run(x))


def _timed_window(runs: list[Callable[[], Any]], settings: ProfileSettings, meter: Meter,
                  reader: PressureReader, runtime: str, model_path: Path, input_shape: list[int]) -> _Window:
    def start() -> None:
        reader.start()
        meter.start()

    try:
        samples = time_interleaved(runs, warmup=settings.warmup, min_runs=settings.min_runs,
                                   min_seconds=settings.min_seconds, on_start=start)
    except Exception as exc:  # the runtime's own error on this model and input: the user's to fix
        raise ProfilingError(f"{runtime} cannot run {model_path.name} on an input of shape {input_shape}: "
                             f"{first_line(exc)}; check the model's input shape (--shape)") from None
    pressure = reader.stop()
    stats = [latency_stats(s, settings.warmup) for s in samples]
    energy = meter.stop(runs=stats[0].n, timed_seconds=stats[0].total_s, latency_s=stats[0].p50 / 1000)
    return _Window(stats, energy, pressure, pressure.contended or stats[0].spread_warning)
