"""`edgekd benchmark`: every export of a run (or one model) on every named target and runtime,
one row per format / precision / target, with the source of every figure. Rows that cannot be
measured say why; predicted rows are marked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import EdgeKDError
from .export import FORMATS
from .measurers import Measurer, measurer_for
from .profilers import ProfileSettings
from .profilers.inputs import onnx_input_shape
from .report.model import Report
from .targets import Target, get_target


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
    source: str = "unavailable"  # of the latency: measured / remote / predicted / cached / unavailable
    sources: dict[str, str] = {}  # per figure (latency, peak_memory, energy, ...): a remote row's energy
    #                               estimate is `predicted`, never `remote`
    contended: str | None = None  # why the latency was taken on a busy host, when it was
    device_accuracy: float | None = None  # measured through the agent: accuracy of the device's own logits
    device_parity: str | None = None  # what the parity check on the device found (and any fallback)
    reason: str | None = None
    measurement: dict[str, Any] | None = None

    def labelled(self, figure: str, text: str) -> str:
        """`text` with its source named when that differs from the row's (latency) source."""
        own = self.sources.get(figure)
        return text if own is None or own == self.source or text in ("–", "-") else f"{text} ({own})"


def models_of(path: Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The exports of a run directory (with their parity accuracy), or one ONNX model."""
    if path.is_dir():
        report_file = path / "report.json"
        if not report_file.is_file():
            raise EdgeKDError(f"{path} holds no report.json; pass a run directory of edgekd optimize or an ONNX file")
        r = Report.model_validate_json(report_file.read_text())
        shape = r.candidates[0].measurement.input_shape
        return [{"path": path / e.path, "format": e.format, "precision": e.precision,
                 "accuracy": e.parity.accuracy_export, "export": e} for e in r.exports], shape
    if not path.is_file():
        raise EdgeKDError(f"{path} does not exist; pass a run directory or an ONNX file")
    return [{"path": path, "format": "onnx", "precision": "fp32", "accuracy": None}], None


def benchmark(path: Path, targets: list[str], runtimes: list[str] | None, settings: ProfileSettings,
              device_url: str | None = None, token_file: Path | None = None) -> list[BenchRow]:
    """One row per model x target x runtime; a row that cannot be measured carries the reason."""
    models, shape = models_of(path)
    check = DeviceCheck(path) if device_url is not None and path.is_dir() else None
    rows: list[BenchRow] = []
    for tname in targets:
        measurer = _measurers(get_target(tname), settings, device_url, token_file)
        for m in models:
            spec = FORMATS.get(m["format"])
            rts = runtimes if (runtimes and m["format"] == "onnx") else [spec.runtime if spec else "onnxruntime"]
            for rt in rts:
                row = _row(m, measurer.target, rt, shape, measurer)
                if check is not None and row.source == "remote" and m["path"].suffix == ".onnx":
                    row = check(row, m, measurer(rt))
                rows.append(row)
    return rows


class DeviceCheck:
    """Parity where the model runs, for a run's exports measured through the agent: the selected
    student and its validation split are loaded once; each remote ONNX row gets the device's own
    accuracy and what its parity check found (with any precision fallback)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.loaded: tuple[Any, Any, Any, Path | None] | str | None = None

    def _load(self) -> tuple[Any, Any, Any, Path | None] | str:
        if self.loaded is None:
            from .data import dataset_from_source
            from .models.io import load_checkpoint

            r = Report.model_validate_json((self.run_dir / "report.json").read_text())
            try:
                model, meta = load_checkpoint(self.run_dir / "candidates" / r.selected / "student.pt")
                ds = dataset_from_source(meta["data_source"], None)
            except (EdgeKDError, KeyError) as exc:
                self.loaded = f"not checked on the device: {exc}"
            else:
                onnx = next((self.run_dir / e.path for e in r.exports if e.format == "onnx"), None)
                self.loaded = (model, ds.x_val, ds.y_val, onnx)
        return self.loaded

    def __call__(self, row: BenchRow, m: dict[str, Any], measurer: Measurer) -> BenchRow:
        from .export.device import device_parity
        from .measurers import AgentMeasurer

        loaded = self._load()
        if isinstance(loaded, str) or not isinstance(measurer, AgentMeasurer):
            return row.model_copy(update={"device_parity": loaded if isinstance(loaded, str) else None})
        model, x, y, onnx = loaded
        export = m["export"].model_copy(update={"path": str(m["path"])})
        dp = device_parity(measurer, model, export, onnx or m["path"], x, y)
        return row.model_copy(update={"device_parity": dp.summary(),
                                      "device_accuracy": dp.parity.accuracy_export if dp.parity else None})


class _measurers:
    """One measurer per runtime of a target, made when first asked (an agent is asked once);
    a measurer that cannot be made raises its error for every row that needs it."""

    def __init__(self, target: Target, settings: ProfileSettings, device_url: str | None, token_file: Path | None):
        self.target, self.settings, self.url, self.token_file = target, settings, device_url, token_file
        self.made: dict[str, Measurer | EdgeKDError] = {}

    def __call__(self, runtime: str) -> Measurer:
        if runtime not in self.made:
            try:
                self.made[runtime] = measurer_for(self.target, self.settings, None, self.url, self.token_file,
                                                  runtime=runtime)
            except EdgeKDError as exc:
                self.made[runtime] = exc
        found = self.made[runtime]
        if isinstance(found, EdgeKDError):
            raise found
        return found


def _row(m: dict[str, Any], target: Target, rt: str, shape: list[int] | None,
         measurer: Callable[[str], Measurer]) -> BenchRow:
    row = BenchRow(model=m["path"].name, format=m["format"], precision=m["precision"], target=target.name,
                   runtime=rt, size_mb=m["path"].stat().st_size / 2**20 if m["path"].exists() else None,
                   accuracy=m["accuracy"])
    if rt not in target.runtimes:
        return row.model_copy(update={"reason": f"{target.name} does not run {rt} "
                                                f"(its runtimes: {', '.join(target.runtimes)})"})
    try:
        inp = shape or onnx_input_shape(m["path"], None, 1)
        meas = measurer(rt).measure(m["path"], inp, m["precision"])
    except EdgeKDError as exc:
        return row.model_copy(update={"reason": str(exc)})
    lat = meas.latency_ms
    return row.model_copy(update={
        "p50_ms": lat.p50, "p90_ms": lat.p90, "p99_ms": lat.p99,
        "throughput_ips": 1000 * meas.batch / lat.mean if lat.mean > 0 else None,
        "peak_memory_mb": meas.peak_memory_mb, "energy_mj": meas.energy_mj, "power_w": meas.mean_power_w,
        "source": meas.source["latency"], "sources": dict(meas.source), "contended": meas.contended,
        "measurement": meas.model_dump(mode="json")})


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
                     f"{f(r.accuracy, 4)}{'' if r.device_accuracy is None else f' (device {r.device_accuracy:.4f})'}"
                     f" | {f(r.p50_ms)} | {f(r.p90_ms)}{' (contended)' if r.contended else ''} | "
                     f"{f(r.p99_ms)} | {f(r.throughput_ips, 0)} | "
                     f"{r.labelled('peak_memory', f(r.peak_memory_mb, 1))} | "
                     f"{r.labelled('energy', f(r.energy_mj, 4))} | {f(r.power_w, 1)} | {src} |")
    checked = [f"- {r.model} on {r.target} ({r.runtime}): parity {r.device_parity}" for r in rows if r.device_parity]
    return "\n".join(lines + ([""] + checked if checked else [])) + "\n"
