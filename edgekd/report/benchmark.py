"""`edgekd benchmark`: every export of a run (or one model) on every named target and runtime,
one row per format / precision / target, with the source of every figure. Rows that cannot be
measured say why; predicted rows are marked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import EdgeKDError
from ..export import FORMATS
from ..profilers import PROFILERS, ProfileSettings, profile_model
from ..profilers.inputs import onnx_input_shape
from ..targets import get_target


class BenchRow(BaseModel):
    model: str
    format: str
    precision: str
    target: str
    runtime: str
    size_mb: float | None = None
    accuracy: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    throughput_ips: float | None = None
    peak_memory_mb: float | None = None
    energy_mj: float | None = None
    power_w: float | None = None
    source: str = "unavailable"  # measured / remote / predicted / cached / unavailable
    reason: str | None = None
    measurement: dict[str, Any] | None = None


def models_of(path: Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The exports of a run directory (with their parity accuracy), or one ONNX model."""
    if path.is_dir():
        report_file = path / "report.json"
        if not report_file.is_file():
            raise EdgeKDError(f"{path} holds no report.json; pass a run directory of edgekd optimize or an ONNX file")
        r = json.loads(report_file.read_text())
        shape = r["candidates"][0]["measurement"]["input_shape"]
        return [{"path": Path(e["path"]), "format": e["format"], "precision": e["precision"],
                 "accuracy": e["parity"]["accuracy_export"]} for e in r["exports"]], shape
    if not path.is_file():
        raise EdgeKDError(f"{path} does not exist; pass a run directory or an ONNX file")
    return [{"path": path, "format": "onnx", "precision": "fp32", "accuracy": None}], None


def benchmark(path: Path, targets: list[str], runtimes: list[str] | None, settings: ProfileSettings,
              device_url: str | None = None, token_file: Path | None = None) -> list[BenchRow]:
    models, shape = models_of(path)
    rows: list[BenchRow] = []
    for tname in targets:
        target = get_target(tname)
        for m in models:
            spec = FORMATS.get(m["format"])
            rts = runtimes if (runtimes and m["format"] == "onnx") else [spec.runtime if spec else "onnxruntime"]
            for rt in rts:
                row = BenchRow(model=m["path"].name, format=m["format"], precision=m["precision"], target=target.name,
                               runtime=rt, size_mb=m["path"].stat().st_size / 2**20 if m["path"].exists() else None,
                               accuracy=m["accuracy"])
                if rt not in target.runtimes:
                    rows.append(row.model_copy(update={"reason": f"{target.name} does not run {rt} "
                                                                 f"(its runtimes: {', '.join(target.runtimes)})"}))
                    continue
                try:
                    inp = shape or onnx_input_shape(m["path"], None, 1)
                    meas = _measure(m, inp, target, rt, settings, device_url, token_file)
                except EdgeKDError as exc:
                    row.reason = str(exc)
                    rows.append(row)
                    continue
                lat = meas.latency_ms
                rows.append(row.model_copy(update={
                    "p50_ms": lat.p50, "p90_ms": lat.p90, "p99_ms": lat.p99,
                    "throughput_ips": 1000 * meas.batch / lat.mean if lat.mean > 0 else None,
                    "peak_memory_mb": meas.peak_memory_mb, "energy_mj": meas.energy_mj, "power_w": meas.mean_power_w,
                    "source": meas.source["latency"], "measurement": meas.model_dump(mode="json")}))
    return rows


def _measure(m: dict, shape: list[int], target, runtime: str, settings: ProfileSettings, device_url: str | None,
             token_file: Path | None):
    from dataclasses import replace

    if device_url:
        from ..agent.client import AgentClient, read_token
        from ..agent.protocol import ProfileRequest

        if m["path"].suffix != ".onnx":
            raise EdgeKDError(f"the agent profiles ONNX models; {m['format']} files are measured where they were built")
        client = AgentClient(device_url, read_token(token_file), retries=1)
        return client.profile(m["path"], ProfileRequest(runtime=runtime, precision=m["precision"], shape=shape,
                                                        runs=settings.min_runs, min_seconds=settings.min_seconds))
    if target.is_local:
        reason = PROFILERS.get(runtime).unavailable()
        if reason:
            raise EdgeKDError(f"{runtime} is not available here: {reason}")
        return profile_model(m["path"], target, runtime, shape, replace(settings, precision=m["precision"]))
    if m["path"].suffix != ".onnx":
        raise EdgeKDError(f"no device reached and the device model reads ONNX graphs, not {m['format']} files")
    from ..profilers.predictor import predict_model

    return predict_model(m["path"], target, shape, runtime, m["precision"])


def render_markdown(rows: list[BenchRow]) -> str:
    def f(v, d=3):
        return "–" if v is None else f"{v:.{d}f}"

    lines = ["# edgekd benchmark", "",
             "| model | format | precision | target | runtime | size MB | accuracy | p50 ms | p90 ms | p99 ms | "
             "inferences/s | peak MB | mJ | W | source |", "|" + "---|" * 15]
    for r in rows:
        src = r.source.upper() if r.source == "predicted" else r.source
        if r.reason:
            src = f"unavailable: {r.reason}"
        lines.append(f"| {r.model} | {r.format} | {r.precision} | {r.target} | {r.runtime} | {f(r.size_mb)} | "
                     f"{f(r.accuracy, 4)} | {f(r.p50_ms)} | {f(r.p90_ms)} | {f(r.p99_ms)} | {f(r.throughput_ips, 0)} | "
                     f"{f(r.peak_memory_mb, 1)} | {f(r.energy_mj, 4)} | {f(r.power_w, 1)} | {src} |")
    return "\n".join(lines) + "\n"
