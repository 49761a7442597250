"""The `edgekd` command line."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .console import make_console
from .errors import EdgeKDError

app = typer.Typer(
    help="Hardware-aware knowledge distillation and edge deployment: distil a teacher into "
         "students, measure them on the target device, export and verify the best one.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """EdgeKDError -> one line on stderr and exit code 2 (bugs keep their traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeKDError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


@app.command()
@user_errors
def optimize(
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target device name or alias (see `edgekd targets`). [default: cpu]"),
    data: Optional[Path] = typer.Option(None, "--data", help="Image-folder data set (one sub-folder per class). [default: the built-in synthetic demo set]"),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint written by edgekd; without it a teacher is trained first."),
    budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="Real-time budget t_real-time for the p90 latency, ms. [default: the target's, 33.3 for cpu]"),
    lambda_: Optional[float] = typer.Option(None, "--lambda", help="Weight λ of the hardware cost C_hw in J. [default: 0.5]"),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Real-time penalty γ added when p90 > budget. [default: 10]"),
    delta: Optional[float] = typer.Option(None, "--delta", help="Weight δ of energy per inference (per mJ) in J. [default: 0]"),
    preset: Optional[str] = typer.Option(None, "--preset", help="smoke (about a minute: tiny data, 3 candidates, 1 epoch) or default."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory. [default: runs/TARGET-TIMESTAMP]"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Write into a run directory that already holds files."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of data generation, splits and training. [default: 0]"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads for profiling. [default: physical cores]"),
    teacher_epochs: Optional[int] = typer.Option(None, "--teacher-epochs", help="Epochs to train the teacher."),
    student_epochs: Optional[int] = typer.Option(None, "--student-epochs", help="KD epochs per candidate student."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input resolution. [default: 32 demo, 64 image folders]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with the same keys as these flags (budget_ms, lambda, ...); flags win."),
    energy_meter: Optional[str] = typer.Option(None, "--energy-meter", help="auto, rapl, nvml, ina3221, estimate or none. [default: auto]"),
    no_cache: Optional[bool] = typer.Option(None, "--no-cache", help="Measure every model even if the measurement cache holds it."),
    quiet: Optional[bool] = typer.Option(None, "--quiet", "-q", help="No progress bars or tables; errors only."),
) -> None:
    """Distil, measure, select, export and report: the whole loop for one target."""
    from .config import build_config
    from .pipeline import run_optimize

    flags = dict(target=target, data=data, teacher=teacher, budget_ms=budget_ms, gamma=gamma, delta=delta,
                 preset=preset, out=out, overwrite=overwrite, seed=seed, threads=threads,
                 teacher_epochs=teacher_epochs, student_epochs=student_epochs, image_size=image_size, quiet=quiet,
                 energy_meter=energy_meter, no_cache=no_cache)
    flags["lambda"] = lambda_
    cfg = build_config(flags, config)
    run_optimize(cfg)


@app.command()
@user_errors
def profile(
    model: Path = typer.Argument(..., help="ONNX file, or an edgekd checkpoint (.pt: needed by the torch runtime)."),
    target: str = typer.Option("cpu", "--target", "-t", help="Target the measurement is for (profiled on this host)."),
    runtime: str = typer.Option("onnxruntime,openvino,torch", "--runtime", "-r",
                                help="Comma-separated runtimes: onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, "
                                     "openvino, openvino-gpu, openvino-npu, tensorrt, torch."),
    runs: int = typer.Option(50, "--runs", min=1, help="Minimum timed runs."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", min=0, help="Minimum timed duration, s (runs continue until both minimums are met)."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed warm-up runs."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads. [default: physical cores]"),
    shape: Optional[str] = typer.Option(None, "--shape", help="Input shape, e.g. 1,3,64,64 (needed when the model's input has dynamic axes besides batch)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size for a dynamic batch axis."),
    precision: str = typer.Option("fp32", "--precision", help="fp32; fp16 or int8 build TensorRT engines of that precision."),
    energy_meter: str = typer.Option("auto", "--energy-meter", help="auto, rapl, nvml, ina3221, estimate or none (auto says which it used)."),
    idle_seconds: float = typer.Option(1.0, "--idle-seconds", min=0, help="Seconds of idle power reading before measuring (sensor meters only)."),
    no_memory: bool = typer.Option(False, "--no-memory", help="Skip the peak-memory child process."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure even when the cache holds this measurement."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Measurement cache folder. [default: EDGEKD_CACHE_DIR or ~/.cache/edgekd]"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the measurements as JSON here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table; errors only."),
) -> None:
    """Measure one model's latency, memory and energy with each runtime on this machine."""
    import json

    from .pipeline import default_threads
    from .profilers import MeasurementCache, ProfileSettings
    from .profilers.cache import default_cache_dir
    from .profilers.energy import open_meter
    from .profilers.inputs import parse_shape, resolve_model
    from .profilers.runner import profile_runtimes
    from .targets import get_target

    tgt = get_target(target)
    names = [r.strip() for r in runtime.split(",") if r.strip()]
    work = cache_dir or default_cache_dir()
    inp = resolve_model(model, parse_shape(shape) if shape else None, batch, work / "onnx")
    meter = open_meter(energy_meter, tgt)  # fails early on a meter that cannot work here
    settings = ProfileSettings(threads=threads or default_threads(), warmup=warmup, min_runs=runs,
                               min_seconds=min_seconds, precision=precision, measure_memory=not no_memory,
                               energy_meter=meter.name, idle_seconds=idle_seconds if meter.name not in ("estimate", "none") else 0.0)
    cache = None if no_cache else MeasurementCache(work / "measurements.sqlite")
    console = make_console(quiet)
    with console.status(f"profiling {model.name} with {', '.join(names)}") if not quiet else _nullcontext():
        measured, skipped = profile_runtimes(inp, tgt, names, settings, cache,
                                             on_done=lambda n: None)
    if not quiet:
        _print_profile(console, model, inp.input_shape, meter.name, measured, skipped)
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


def _print_profile(console: Console, model: Path, shape: list[int], meter: str, measured: list, skipped: list) -> None:
    t = Table(title=f"{model.name}, input {'x'.join(map(str, shape))}, energy meter: {meter}")
    for col in ("runtime", "device", "prec", "threads", "n", "p50 ms", "p90 ms", "p99 ms", "CV", "peak MB",
                "size MB", "mJ/inf", "source"):
        t.add_column(col, justify="left" if col in ("runtime", "device", "prec", "source") else "right")
    for m in measured:
        lat = m.latency_ms
        src = "cached" if "cached" in m.source.values() else "measured"
        if m.source.get("energy") == "predicted":
            src += ", energy predicted"
        t.add_row(m.runtime, m.device, m.precision, str(m.threads), str(lat.n), f"{lat.p50:.3f}", f"{lat.p90:.3f}",
                  f"{lat.p99:.3f}", f"{lat.cv:.1%}", "-" if m.peak_memory_mb is None else f"{m.peak_memory_mb:.1f}",
                  f"{m.model_size_mb:.3f}", "-" if m.energy_mj is None else f"{m.energy_mj:.4f}", src)
    console.print(t)
    for u in skipped:
        console.print(f"[yellow]{u.runtime}: unavailable[/] — {escape(u.reason)}", highlight=False)


@app.command()
@user_errors
def targets() -> None:
    """List the known target devices."""
    from .targets import catalogue

    t = Table(title="targets")
    for col in ("name", "class", "aliases", "runtimes", "budget ms", "power W", "description"):
        t.add_column(col)
    for tg in catalogue().values():
        t.add_row(tg.name, tg.device_class, ", ".join(tg.aliases), ", ".join(tg.runtimes),
                  f"{tg.default_budget_ms:g}", "" if tg.power_w() is None else f"{tg.power_w():g}", tg.description)
    make_console().print(t)


def main() -> None:
    app(prog_name="edgekd")


if __name__ == "__main__":
    sys.exit(main())
