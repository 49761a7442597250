"""Child process: python -m edgekd.profilers.memory_probe RUNTIME MODEL SHAPE THREADS RUNS PRECISION

Prints {"baseline_mb", "peak_mb"}: resident memory after importing the runtime, and the
high-water mark after loading the model and running it RUNS times. On Linux the high-water
mark is reset after the imports (/proc/self/clear_refs), so it covers loading and running only."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: list[str]) -> None:
    runtime, model, shape_s, threads_s, runs_s, precision = argv
    from edgekd.profilers import PROFILERS  # imports the runtimes before the baseline

    adapter = PROFILERS.get(runtime)
    adapter.version()
    shape = [int(v) for v in shape_s.split(",")]
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    baseline = _status_mb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded = adapter.load(Path(model), int(threads_s), precision, shape)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(int(runs_s)):
        loaded.run(x)
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded.close()
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak}))


if __name__ == "__main__":
    main(sys.argv[1:])
