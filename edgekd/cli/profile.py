"""`edgekd profile`: one model's latency, memory and energy with each runtime on this machine."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer
from rich.markup import escape

from ..console import make_console
from ..errors import EdgeKDError
from .app import app, user_errors
from .options import quiet_option, split, threads_option
from .tables import profile_table


@app.command()
@user_errors
def profile(
    model: Path = typer.Argument(..., help="ONNX file, or an edgekd checkpoint (.pt: needed by the torch runtime)."),
    target: str = typer.Option("cpu", "--target", "-t", help="Target the measurement is for (profiled on this host)."),
    runtime: str = typer.Option("onnxruntime,openvino,torch", "--runtime", "-r",
                                help="Comma-separated runtimes: onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, "
                                     "openvino, openvino-gpu, openvino-npu, tensorrt, torch."),
    runs: int = typer.Option(50, "--runs", min=1, help="Minimum timed runs."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", min=0, help="Minimum timed duration, s (runs continue "
                                                                        "until both minimums are met)."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed warm-up runs."),
    threads: int | None = threads_option(),
    shape: str | None = typer.Option(None, "--shape", help="Input shape, e.g. 1,3,64,64 (needed when the model's input "
                                                           "has dynamic axes besides batch)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size for a dynamic batch axis."),
    precision: str = typer.Option("fp32", "--precision", help="fp32; fp16 or int8 build TensorRT engines of that "
                                                              "precision."),
    energy_meter: str = typer.Option("auto", "--energy-meter", help="auto, rapl, nvml, ina3221, estimate or none (auto "
                                                                    "says which it used)."),
    idle_seconds: float = typer.Option(1.0, "--idle-seconds", min=0, help="Seconds of idle power reading before "
                                                                          "measuring (sensor meters only)."),
    no_memory: bool = typer.Option(False, "--no-memory", metavar="", help="Skip the peak-memory child process."),
    no_cache: bool = typer.Option(False, "--no-cache", metavar="",
                                  help="Measure even when the cache holds this measurement."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Measurement cache folder. [default: "
                                                                    "EDGEKD_CACHE_DIR or ~/.cache/edgekd]"),
    json_out: Path | None = typer.Option(None, "--json", help="Write the measurements as JSON here."),
    quiet: bool = quiet_option("No table; errors only."),
) -> None:
    """Measure one model's latency, memory and energy with each runtime on this machine."""
    import json

    from ..files import check_writable
    from ..host import default_threads
    from ..profilers import MeasurementCache, ProfileSettings
    from ..profilers.cache import default_cache_dir
    from ..profilers.energy import open_meter
    from ..profilers.inputs import parse_shape, resolve_model
    from ..profilers.runner import profile_runtimes
    from ..targets import get_target

    tgt = get_target(target)
    names = split(runtime)
    work = cache_dir or default_cache_dir()
    if json_out:
        check_writable(json_out, "--json")  # before the measurement, not after it
    check_writable(work, "--cache-dir", folder=True)
    inp = resolve_model(model, parse_shape(shape) if shape else None, batch, work / "onnx")
    meter = open_meter(energy_meter, tgt)  # fails early on a meter that cannot work here
    settings = ProfileSettings(threads=threads or default_threads(), warmup=warmup, min_runs=runs,
                               min_seconds=min_seconds, precision=precision, measure_memory=not no_memory,
                               energy_meter=meter.name,
                               idle_seconds=idle_seconds if meter.name not in ("estimate", "none") else 0.0)
    cache = None if no_cache else MeasurementCache(work / "measurements.sqlite")
    console = make_console(quiet)
    with console.status(f"profiling {model.name} with {', '.join(names)}") if not quiet else nullcontext():
        measured, skipped = profile_runtimes(inp, tgt, names, settings, cache, on_done=lambda n: None)
    if not quiet:
        console.print(profile_table(model, inp.input_shape, meter.name, measured))
        for u in skipped:
            console.print(f"[yellow]{u.runtime}: unavailable[/] — {escape(u.reason)}", highlight=False)
    if json_out:
        json_out.write_text(json.dumps({
            "model": str(model), "onnx": str(inp.onnx_path), "target": tgt.name, "input_shape": inp.input_shape,
            "energy_meter": meter.name, "measurements": [m.model_dump(mode="json") for m in measured],
            "unavailable": [{"runtime": u.runtime, "reason": u.reason} for u in skipped]}, indent=2))
    if not measured:
        raise EdgeKDError("no runtime could profile the model: "
                          + "; ".join(f"{u.runtime}: {u.reason}" for u in skipped))


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()
