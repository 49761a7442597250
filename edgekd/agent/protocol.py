"""What host and agent exchange (request and response bodies)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "v1"


class ProfileRequest(BaseModel):
    """The `request` part of POST /v1/profile."""

    model_config = ConfigDict(extra="forbid")

    runtime: str = "onnxruntime"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    shape: list[int] | None = Field(default=None, description="input shape; default: the model's, batch 1")
    runs: int = Field(default=50, ge=1, le=100_000)
    min_seconds: float = Field(default=1.0, ge=0, le=600)
    warmup: int = Field(default=10, ge=0, le=10_000)
    threads: int | None = Field(default=None, ge=1, le=1024)
    energy_meter: str = "auto"
    measure_memory: bool = True


class JobTiming(BaseModel):
    queued_s: float
    started: float  # agent clock (time.time) when the job's child process started
    finished: float


class ProfileResponse(BaseModel):
    measurement: dict
    job: JobTiming
