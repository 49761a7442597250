"""What host and agent exchange (request and response bodies)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_VERSION = "v1"
MAX_DIM = 16384
MAX_ELEMENTS = 2**26  # 256 MB of float32 input: more than any edge model takes


def is_agent_url(url: str) -> bool:
    """Whether `url` is an http(s) URL with a host (what `edgekd agent` listens on)."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


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

    @field_validator("shape")
    @classmethod
    def _bounded(cls, shape: list[int] | None) -> list[int] | None:
        if shape is None:
            return None
        if not 1 <= len(shape) <= 6 or any(not 1 <= d <= MAX_DIM for d in shape):
            raise ValueError(f"a shape has 1 to 6 dimensions of 1 to {MAX_DIM} each, not {shape}")
        n = math.prod(shape)
        if n > MAX_ELEMENTS:
            raise ValueError(f"shape {shape} has {n} elements, over the agent's {MAX_ELEMENTS}")
        return shape


class JobTiming(BaseModel):
    queued_s: float
    started: float  # agent clock (time.time) when the job's child process started
    finished: float


class ProfileResponse(BaseModel):
    measurement: dict
    job: JobTiming


MAX_PARITY_IMAGES = 512  # a validation slice, not a data set


class ParityRequest(BaseModel):
    """The `request` part of POST /v1/parity: run the model on the `inputs` part (a float32 .npy
    array, N x C x H x W, N <= MAX_PARITY_IMAGES) in this runtime and precision; logits come back."""

    model_config = ConfigDict(extra="forbid")

    runtime: str = "onnxruntime"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    threads: int | None = Field(default=None, ge=1, le=1024)


class ParityResponse(BaseModel):
    logits: list[list[float]]
    runtime: str
    runtime_version: str
    precision: str
    execution: dict[str, str] = {}
    job: JobTiming
