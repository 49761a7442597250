"""How a model is measured: threads, warm-up, the minimum run count and duration, precision,
memory and energy options. A leaf record shared by the method, the cache and the measurers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProfileSettings:
    threads: int
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 1.0
    precision: str = "fp32"
    measure_memory: bool = True
    energy_meter: str = "auto"
    idle_seconds: float = 0.0  # > 0: measure idle power for that long before the warm-up
    seed: int = 0
    attempts: int = 3  # timed windows at most when the host is contended (1: never repeat)
    retry_pause_s: float = 1.0  # wait between a contended window and the next try

    def cache_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("seed", "attempts", "retry_pause_s")}
