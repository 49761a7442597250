"""Where a candidate is measured, separate from what measures it (the Olive idea): on this
machine, on the device through its agent, or — with neither — predicted by the device model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..targets import Target
from .base import ProfileSettings, profile_model
from .cache import MeasurementCache
from .measurement import Measurement


@dataclass
class Measurer:
    mode: str  # "measured" | "remote" | "predicted"
    runtime: str
    describe: str
    measure: Callable[[Path, list[int], str], Measurement]
    # the cheap signal for screening proposals before training: a short local measurement, or
    # the device model (calibrated when a calibration exists)
    screen: Callable[[Path, list[int], str], Measurement] | None = None

    def __call__(self, onnx_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        return self.measure(onnx_path, shape, precision)


def measurer_for(target: Target, settings: ProfileSettings, cache: MeasurementCache | None,
                 device_url: str | None = None, token_file: Path | None = None,
                 runtime: str | None = None) -> Measurer:
    rt = runtime or target.runtimes[0]
    from .predictor import predict_model
    from .predictor.calibration import load_calibration

    def predicted(path: Path, shape: list[int], p: str) -> Measurement:
        return predict_model(path, target, shape, rt, p, load_calibration(target.name, rt, p))

    if device_url:
        from ..agent.client import AgentClient, read_token
        from ..agent.protocol import ProfileRequest

        client = AgentClient(device_url, read_token(token_file))
        info = client.info()  # unreachable agent or wrong token: fail now, before any training
        req = ProfileRequest(runtime=rt, precision=settings.precision, runs=settings.min_runs,
                             min_seconds=settings.min_seconds, warmup=settings.warmup,
                             energy_meter=settings.energy_meter, measure_memory=settings.measure_memory)
        return Measurer("remote", rt, f"measured on the device by the agent at {device_url} "
                                      f"({info['target']['name']}, {rt})",
                        lambda path, shape, p: client.profile(path, req.model_copy(update={"shape": shape,
                                                                                             "precision": p})),
                        screen=predicted)
    if target.is_local:
        quick = replace(settings, warmup=3, min_runs=20, min_seconds=0.0, measure_memory=False, energy_meter="none")
        return Measurer("measured", rt, f"measured on this machine ({rt}, {settings.threads} threads)",
                        lambda path, shape, p: profile_model(path, target, rt, shape, replace(settings, precision=p),
                                                             cache),
                        screen=lambda path, shape, p: profile_model(path, target, rt, shape,
                                                                    replace(quick, precision=p)))
    cal = load_calibration(target.name, rt, settings.precision)
    return Measurer("predicted", rt,
                    f"PREDICTED by the device model for {target.name} ({rt}); no device was reached "
                    f"(pass --device-url to measure on the board); "
                    + (cal.describe() if cal else "uncalibrated (edgekd calibrate --target ... improves it)"),
                    predicted, screen=predicted)
