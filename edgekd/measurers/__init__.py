"""Where a model is measured, decided once (Olive's "system" idea): on this machine, on the
device through its agent, or — with neither — predicted by the device model.

`measurer_for` picks one of three `Measurer`s; `optimize`, `benchmark` and `calibrate` all call
it and never decide again. Every measurer returns a `Measurement` whose `source` says which of
the three it came from (measured / remote / predicted, or cached for a cache hit)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ..agent.protocol import MAX_PARITY_IMAGES
from ..errors import EdgeKDError, ProfilingError
from ..profilers import PROFILERS, MeasurementCache, ProfileSettings, profile_model
from ..profilers.base import Reference
from ..profilers.measurement import Measurement
from ..targets import Target

Mode = Literal["measured", "remote", "predicted"]
MAX_PARITY_REQUESTS = 4  # a device parity check sends its images in at most this many requests


class Measurer(Protocol):
    """Measures ONNX models (other formats: only `LocalMeasurer`) for one target and runtime.

    `measure` is the figure that enters J and the report; `screen` is the cheap signal used to
    drop proposals before training (a short local run, or the device model). Both raise an
    EdgeKDError naming the problem when the model cannot be measured; neither changes the model
    file. `mode` is the source the latency figure will carry; `describe` says it in words."""

    @property
    def mode(self) -> Mode: ...

    @property
    def runtime(self) -> str: ...

    @property
    def describe(self) -> str: ...

    def measure(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement: ...

    def screen(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement: ...


@dataclass
class PredictedMeasurer:
    """The device model: FLOPs and bytes per node against the target's roofline (calibrated when
    a calibration for the target, runtime and precision exists). Figures are `predicted`."""

    target: Target
    runtime: str
    precision: str = "fp32"
    mode: Mode = "predicted"

    @property
    def describe(self) -> str:
        from ..profilers.predictor.calibration import load_calibration

        cal = load_calibration(self.target.name, self.runtime, self.precision)
        return (f"PREDICTED by the device model for {self.target.name} ({self.runtime}); no device was reached "
                "(pass --device-url to measure on the board); "
                + (cal.describe() if cal else "uncalibrated (edgekd calibrate --target ... improves it)"))

    def measure(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        from ..profilers.predictor import predict_model
        from ..profilers.predictor.calibration import load_calibration

        if model_path.suffix != ".onnx":
            raise ProfilingError(f"no device reached and the device model reads ONNX graphs, not {model_path.name}")
        return predict_model(model_path, self.target, shape, self.runtime, precision,
                             load_calibration(self.target.name, self.runtime, precision))

    screen = measure


@dataclass
class LocalMeasurer:
    """This machine, with the shared method of edgekd.profilers.base; identical requests are
    answered from the cache. Screening is a short run without memory or energy."""

    target: Target
    runtime: str
    settings: ProfileSettings
    cache: MeasurementCache | None = None
    mode: Mode = "measured"
    reference: Reference | None = None  # timed beside every model `measure` times, interleaved

    @property
    def describe(self) -> str:
        beside = f", the teacher timed beside each ({self.reference.path.name})" if self.reference else ""
        return f"measured on this machine ({self.runtime}, {self.settings.threads} threads{beside})"

    def beside(self, reference: Reference) -> LocalMeasurer:
        """This measurer, timing `reference` in the same window as every model it measures."""
        return replace(self, reference=reference)

    def _check(self) -> None:
        reason = PROFILERS.get(self.runtime).unavailable()
        if reason:
            raise ProfilingError(f"{self.runtime} is not available here: {reason}")

    def measure(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        self._check()
        return profile_model(model_path, self.target, self.runtime, shape, replace(self.settings, precision=precision),
                             self.cache, beside=self.reference)

    def screen(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        self._check()
        quick = replace(self.settings, warmup=3, min_runs=20, min_seconds=0.0, measure_memory=False,
                        energy_meter="none", precision=precision)
        return profile_model(model_path, self.target, self.runtime, shape, quick)


@dataclass
class AgentMeasurer:
    """The board itself, through `edgekd agent` (figures: `remote`). Screening uses the device
    model, so proposals are not shipped to the board before they are worth training."""

    target: Target
    runtime: str
    settings: ProfileSettings
    url: str
    token: str
    threads: int | None = None  # sent only when the user chose them; else the agent's default
    mode: Mode = "remote"
    label: str = ""  # the board's name in records (else its URL)
    timeout_s: float = 900.0  # one request's time limit
    retries: int = 4  # transient failures retried on this agent
    _board: str = field(default="", repr=False)
    _max_body_bytes: int = field(default=64 * 2**20, repr=False)

    def __post_init__(self) -> None:
        from ..agent.client import AgentClient

        self.client = AgentClient(self.url, self.token, retries=self.retries, timeout_s=self.timeout_s)

    @property
    def board(self) -> str:
        return self.label or self.url

    @property
    def board_target(self) -> str:
        """The target the agent said it runs on (after `connect`)."""
        return self._board

    def connect(self, timeout_s: float | None = None, retries: int | None = None) -> AgentMeasurer:
        """Ask the agent who it is: an unreachable agent or a wrong token fails here, before any work."""
        info = self.client.info(timeout_s, retries)
        self._board = info["target"]["name"]
        self._max_body_bytes = int(float(info["agent"].get("max_body_mb", 64)) * 2**20)
        return self

    @property
    def describe(self) -> str:
        return f"measured on the device by the agent at {self.url} ({self._board or self.target.name}, {self.runtime})"

    def measure(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        from ..agent.protocol import ProfileRequest

        if model_path.suffix != ".onnx":
            raise EdgeKDError(f"the agent profiles ONNX models; {model_path.name} is measured where it was built")
        s = self.settings
        m = self.client.profile(model_path, ProfileRequest(
            runtime=self.runtime, precision=precision, shape=shape, runs=s.min_runs, min_seconds=s.min_seconds,
            warmup=s.warmup, threads=self.threads, energy_meter=s.energy_meter, measure_memory=s.measure_memory))
        return m.model_copy(update={"board": self.board})

    def screen(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        return PredictedMeasurer(self.target, self.runtime).measure(model_path, shape, precision)

    def logits(self, model_path: Path, x: np.ndarray, precision: str = "fp32") -> tuple[np.ndarray, Any]:
        """The device's logits of `model_path` (ONNX) on images `x`, in its runtime and `precision`.
        Requests stay under the agent's body limit: the images go in as few requests as fit, at
        most `MAX_PARITY_REQUESTS` (each loads the model again on the device), and the images
        beyond those are not sent -- the returned logits cover the first len(logits) images."""
        from ..agent.protocol import ParityRequest

        room = self._max_body_bytes - model_path.stat().st_size - 256 * 1024  # multipart and JSON overhead
        per_image = int(np.prod(x.shape[1:])) * 4
        fit = min(room // per_image, MAX_PARITY_IMAGES) if room > 0 else 0
        if fit < 1:
            raise EdgeKDError(f"{model_path.name} with one image is over the agent's body limit of "
                              f"{self._max_body_bytes / 2**20:g} MB; start the agent with a larger --max-body-mb")
        n = min(len(x), fit * MAX_PARITY_REQUESTS)
        req = ParityRequest(runtime=self.runtime, precision=precision, threads=self.threads)
        parts, resp = [], None
        for i in range(0, n, fit):
            logits, resp = self.client.parity(model_path, x[i:min(i + fit, n)], req)
            parts.append(logits)
        return np.concatenate(parts), resp


def measurer_for(target: Target, settings: ProfileSettings, cache: MeasurementCache | None = None,
                 device_url: str | list[str] | None = None, token_file: Path | None = None,
                 runtime: str | None = None, device_threads: int | None = None, devices_file: Path | None = None,
                 device_timeout_s: float = 900.0, board_tolerance: float = 0.25) -> Measurer:
    """The one decision: agent URLs (or a --devices file) mean the boards (checked now: reachable,
    token accepted; several make a pool); else a target that is this machine is measured here;
    else the device model predicts."""
    rt = runtime or target.runtimes[0]
    urls = [device_url] if isinstance(device_url, str) else list(device_url or [])
    if devices_file is not None or len(urls) > 1:
        from .pool import BoardPool, BoardSpec, read_devices, unique_boards

        boards = unique_boards((read_devices(devices_file) if devices_file is not None else [])
                               + [BoardSpec(url=u) for u in urls])
        return BoardPool(target, rt, settings, boards, token_file, device_threads, device_timeout_s,
                         board_tolerance).connect()
    if urls:
        from ..agent.client import read_token

        return AgentMeasurer(target, rt, settings, urls[0], read_token(token_file), device_threads,
                             timeout_s=device_timeout_s).connect()
    if target.is_local:
        return LocalMeasurer(target, rt, settings, cache)
    return PredictedMeasurer(target, rt, settings.precision)
