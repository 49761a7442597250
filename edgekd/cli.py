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
    precisions: Optional[str] = typer.Option(None, "--precisions", help="Precisions searched: fp32 or fp32,int8 (INT8 students scored by measured INT8 latency and post-quantization accuracy). [default: fp32]"),
    export_formats: Optional[str] = typer.Option(None, "--export-formats", help="Formats of the selected student (see `edgekd export --help`). [default: onnx,openvino]"),
    kd: Optional[str] = typer.Option(None, "--kd", help="KD terms NAME[:WEIGHT],...: response, feature, relation, multi-teacher, semi-supervised, robust. [default: response]"),
    teacher_extra: Optional[list[Path]] = typer.Option(None, "--teacher-extra", help="More teachers for --kd multi-teacher (repeatable)."),
    unlabeled: Optional[Path] = typer.Option(None, "--unlabeled", help="Folder of unlabelled images for --kd semi-supervised."),
    teacher_views: Optional[int] = typer.Option(None, "--teacher-views", help="Dihedral views (rotations/flips) of each training image whose teacher outputs are cached: 1 = no augmentation, up to 8. [default: 1]"),
    search: Optional[str] = typer.Option(None, "--search", help="grid (the configured candidates), tpe (Optuna TPE on J) or nsga2 (accuracy vs p90). [default: grid]"),
    trials: Optional[int] = typer.Option(None, "--trials", help="Proposals of a tpe/nsga2 search. [default: 16]"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop proposing and training after this long; select among what finished."),
    no_screen: Optional[bool] = typer.Option(None, "--no-screen", help="Train every proposal, even those far over the budget."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a stopped run in this run directory (its config.yaml); finished work is not redone."),
    no_cache: Optional[bool] = typer.Option(None, "--no-cache", help="Measure every model even if the measurement cache holds it."),
    device_url: Optional[str] = typer.Option(None, "--device-url", help="URL of `edgekd agent` on the target device: every candidate is measured there (source: remote)."),
    device_token_file: Optional[Path] = typer.Option(None, "--device-token-file", help="File with the agent's bearer token (else EDGEKD_AGENT_TOKEN)."),
    quiet: Optional[bool] = typer.Option(None, "--quiet", "-q", help="No progress bars or tables; errors only."),
) -> None:
    """Distil, measure, select, export and report: the whole loop for one target."""
    from .config import build_config
    from .pipeline import run_optimize

    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise EdgeKDError(f"--resume {resume} holds no config.yaml; pass the run directory of an edgekd optimize run")
        cfg = build_config({"out": resume, "quiet": bool(quiet), "device_url": device_url,
                            "device_token_file": device_token_file}, resume / "config.yaml")
        run_optimize(cfg, resume=True)
        return
    flags = dict(target=target, data=data, teacher=teacher, budget_ms=budget_ms, gamma=gamma, delta=delta,
                 preset=preset, out=out, overwrite=overwrite, seed=seed, threads=threads,
                 teacher_epochs=teacher_epochs, student_epochs=student_epochs, image_size=image_size, quiet=quiet,
                 energy_meter=energy_meter, no_cache=no_cache, device_url=device_url,
                 precisions=precisions.split(",") if precisions else None,
                 export_formats=export_formats.split(",") if export_formats else None,
                 kd=kd.split(",") if kd else None, teachers=teacher_extra or None, unlabeled=unlabeled,
                 teacher_views=teacher_views, search=search, trials=trials, max_minutes=max_minutes,
                 screen=False if no_screen else None,
                 device_token_file=device_token_file)
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

    from .host import default_threads
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


@app.command("export")
@user_errors
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by edgekd (RUN_DIR/candidates/NAME/student.pt, teacher.pt)."),
    formats: str = typer.Option("onnx,openvino", "--formats", "-f",
                                help="Comma-separated: onnx, onnx-int8, openvino, openvino-fp16, openvino-int8, "
                                     "tensorrt-fp16, tensorrt-int8 (TensorRT on the NVIDIA device itself)."),
    out: Path = typer.Option(Path("exports"), "--out", "-o", help="Folder for the exported files and export.json."),
    data: Optional[Path] = typer.Option(None, "--data", help="Image folder for calibration and validation. [default: the data set the checkpoint names]"),
    calibration_size: int = typer.Option(300, "--calibration-size", min=1, help="INT8 calibration images drawn from the training split."),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="openvino-int8: accuracy-controlled quantization keeping the drop below this (0.01 = 1 point)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads for the parity runs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Errors only."),
) -> None:
    """Export a checkpoint to deployment formats; every export is checked against PyTorch on the validation split."""
    import json

    from .models.arch import ArchSpec
    from .data import dataset_from_source
    from .errors import DataError
    from .export.run import export_formats, export_metadata
    from .models.io import load_checkpoint
    from .host import default_threads

    model, meta = load_checkpoint(checkpoint)
    if not meta.get("data_source") and data is None:
        raise DataError(f"{checkpoint} does not name its data set (written by an older edgekd); pass --data DIR")
    ds = dataset_from_source(meta.get("data_source") or {"seed": 0, "val_fraction": 0.2, "image_size": meta["image_size"],
                                                          "samples_per_class": 0, "max_samples_per_class": None}, data)
    if ds.classes != meta["classes"]:
        raise DataError(f"the data set has classes {ds.classes}, the checkpoint {meta['classes']}; pass the --data it was trained on")
    console = make_console(quiet)
    mean = model.normalize.mean.flatten().tolist()
    std = model.normalize.std.flatten().tolist()

    def done(r) -> None:
        console.print(f"{r.format}: {r.path} ({r.size_mb:.3f} MB) top-1 agreement {r.parity.top1_agreement:.4f}, "
                      f"accuracy {r.parity.accuracy_export:.4f} (PyTorch {r.parity.accuracy_torch:.4f}), "
                      f"max |Δlogit| {r.parity.max_abs_diff:.2e}", highlight=False)

    with console.status(f"exporting {checkpoint.name}: {formats}"):
        arch = ArchSpec.model_validate(meta["arch"]).name
        results = export_formats(model, ds, formats, out, checkpoint.stem, export_metadata(ds, arch, "export", mean, std),
            calibration_size=calibration_size, max_accuracy_drop=max_accuracy_drop,
            threads=threads or default_threads(), on_done=done)
    (out / "export.json").write_text(json.dumps({"checkpoint": str(checkpoint), "dataset": ds.summary(),
                                                 "exports": [r.model_dump(mode="json") for r in results]}, indent=2))


@app.command("benchmark")
@user_errors
def benchmark_cmd(
    source: Path = typer.Argument(..., help="A run directory (every export in it) or one ONNX model."),
    targets: str = typer.Option("cpu", "--targets", help="Comma-separated targets, e.g. cpu,jetson-orin-nano."),
    runtimes: Optional[str] = typer.Option(None, "--runtimes", help="Runtimes for ONNX files (others use their format's runtime)."),
    runs: int = typer.Option(100, "--runs", min=1, help="Minimum timed runs."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", min=0, help="Minimum timed duration, s."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads. [default: physical cores]"),
    device_url: Optional[str] = typer.Option(None, "--device-url", help="Agent on the device (figures: remote)."),
    device_token_file: Optional[Path] = typer.Option(None, "--device-token-file", help="The agent's bearer token."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for benchmark.json and benchmark.md. [default: the run directory, or next to the model]"),
) -> None:
    """Benchmark every export of a run (or one model) on every named target and runtime."""
    import json

    from .host import default_threads
    from .profilers import ProfileSettings
    from .benchmark import benchmark, render_markdown

    settings = ProfileSettings(threads=threads or default_threads(), min_runs=runs, min_seconds=min_seconds)
    rows = benchmark(source, [t.strip() for t in targets.split(",") if t.strip()],
                     [r.strip() for r in runtimes.split(",")] if runtimes else None, settings, device_url,
                     device_token_file)
    folder = out or (source if source.is_dir() else source.parent)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "benchmark.json").write_text(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
    md = render_markdown(rows)
    (folder / "benchmark.md").write_text(md)
    t = Table(title="edgekd benchmark (PREDICTED rows come from the device model, not a device)")
    for col in ("model", "format", "target", "runtime", "p50 ms", "p90 ms", "inf/s", "peak MB", "mJ", "accuracy", "source"):
        t.add_column(col)
    for r in rows:
        src = r.source.upper() if r.source == "predicted" else r.source
        t.add_row(r.model, r.format, r.target, r.runtime, *(("-" if v is None else f"{v:.3f}") for v in (r.p50_ms, r.p90_ms)),
                  "-" if r.throughput_ips is None else f"{r.throughput_ips:.0f}",
                  "-" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.1f}",
                  "-" if r.energy_mj is None else f"{r.energy_mj:.4f}",
                  "-" if r.accuracy is None else f"{r.accuracy:.4f}",
                  escape(f"unavailable: {r.reason}") if r.reason else src)
    make_console().print(t)
    make_console().print(f"wrote {folder / 'benchmark.json'} and {folder / 'benchmark.md'}")


@app.command()
@user_errors
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `edgekd optimize`.")) -> None:
    """Regenerate report.md and report.html from RUN_DIR/report.json."""
    import json

    from pydantic import ValidationError

    from .report import Report, write_reports

    path = run_dir / "report.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeKDError(f"{path} does not exist; pass the run directory of an edgekd optimize run") from None
    except json.JSONDecodeError as exc:
        raise EdgeKDError(f"{path} is not valid JSON (line {exc.lineno}); it was edited or cut short") from None
    if data.get("schema_version") != 1:
        raise EdgeKDError(f"{path} has schema_version {data.get('schema_version')!r}; this edgekd reads version 1")
    try:
        report = Report.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise EdgeKDError(f"{path} does not match the report schema at {where}: {err['msg']}; "
                          "it was edited or written by another edgekd version") from None
    write_reports(run_dir, report)
    make_console().print(f"wrote {run_dir / 'report.md'} and {run_dir / 'report.html'}")


targets_app = typer.Typer(help="The target devices: list them, or show one.", invoke_without_command=True,
                          no_args_is_help=False)
app.add_typer(targets_app, name="targets")


@targets_app.callback()
@user_errors
def targets(ctx: typer.Context) -> None:
    """List the known target devices (built-in and from EDGEKD_TARGETS_PATH)."""
    if ctx.invoked_subcommand is not None:
        return
    from .targets import catalogue

    t = Table(title="targets (add your own: NAME.yaml in a folder listed in EDGEKD_TARGETS_PATH)")
    for col in ("name", "class", "aliases", "runtimes", "budget ms", "power W", "fp32 GFLOP/s", "GB/s", "description"):
        t.add_column(col, no_wrap=col == "name")
    for tg in catalogue().values():
        t.add_row(tg.name, tg.device_class, ", ".join(tg.aliases), ", ".join(tg.runtimes),
                  f"{tg.default_budget_ms:g}", "" if tg.power_w() is None else f"{tg.power_w():g}",
                  f"{tg.peak_gflops['fp32']:g}" if "fp32" in tg.peak_gflops else "detected" if tg.is_local else "",
                  f"{tg.memory_bandwidth_gbps:g}" if tg.memory_bandwidth_gbps else "", tg.description)
    make_console().print(t)


@targets_app.command("show")
@user_errors
def targets_show(name: str = typer.Argument(..., help="Target name or alias.")) -> None:
    """Print one target: class, runtimes, memory, power modes, peak figures and their sources."""
    import yaml

    from .targets import get_target

    tg = get_target(name)
    data = tg.model_dump(mode="json")
    data["local"] = tg.is_local
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


@app.command()
@user_errors
def predict(
    model: Path = typer.Argument(..., help="ONNX model."),
    target: str = typer.Option(..., "--target", "-t", help="Target device."),
    runtime: Optional[str] = typer.Option(None, "--runtime", "-r", help="Runtime the prediction is for. [default: the target's first]"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8."),
    shape: Optional[str] = typer.Option(None, "--shape", help="Input shape (needed for dynamic axes besides batch)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the prediction as JSON here."),
) -> None:
    """Predict latency, peak memory and energy of a model on a target from its graph."""
    from .profilers.inputs import onnx_input_shape, parse_shape
    from .profilers.predictor import predict_model
    from .targets import get_target

    tg = get_target(target)
    rt = runtime or tg.runtimes[0]
    inp_shape = onnx_input_shape(model, parse_shape(shape) if shape else None, 1)
    m = predict_model(model, tg, inp_shape, rt, precision)
    console = make_console()
    t = Table(title=f"{model.name} on {tg.name} ({rt}, {precision}): PREDICTED, not measured")
    for col in ("p50 ms", "peak memory MB", "energy mJ", "power W", "calibration"):
        t.add_column(col)
    t.add_row(f"{m.latency_ms.p50:.4f}", f"{m.peak_memory_mb:.1f}", "-" if m.energy_mj is None else f"{m.energy_mj:.4f}",
              "-" if m.mean_power_w is None else f"{m.mean_power_w:g}", escape(m.notes[0].split(";")[0]))
    console.print(t)
    if json_out:
        json_out.write_text(m.model_dump_json(indent=2))


@app.command()
@user_errors
def calibrate(
    target: str = typer.Option(..., "--target", "-t", help="Target to calibrate."),
    runtime: Optional[str] = typer.Option(None, "--runtime", "-r", help="Runtime to measure with. [default: the target's first]"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8."),
    device_url: Optional[str] = typer.Option(None, "--device-url", help="Agent on the device (needed for targets other than this host)."),
    device_token_file: Optional[Path] = typer.Option(None, "--device-token-file", help="Bearer token of the agent."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads. [default: physical cores]"),
    min_seconds: float = typer.Option(0.5, "--min-seconds", min=0, help="Minimum timed duration per model, s."),
) -> None:
    """Fit the device model to real measurements of 32 calibration models on the target."""
    from .host import default_threads
    from .measurers import measurer_for
    from .profilers import ProfileSettings
    from .profilers.predictor.calibrate import calibrate as run_calibration, calibration_set
    from .profilers.predictor.calibration import calibration_dir
    from .targets import get_target

    tg = get_target(target)
    rt = runtime or tg.runtimes[0]
    settings = ProfileSettings(threads=threads or default_threads(), min_seconds=min_seconds, precision=precision,
                               energy_meter="none")
    measurer = measurer_for(tg, settings, None, device_url, device_token_file, runtime=rt, device_threads=threads)
    if measurer.mode == "predicted":
        raise EdgeKDError(f"target {tg.name} is not this machine: pass --device-url of the edgekd agent running on it")
    measure = lambda path, shape: measurer.measure(path, shape, precision)  # noqa: E731
    console = make_console()
    n = len(calibration_set())
    with console.status(f"calibrating {tg.name}/{rt}/{precision} on {n} models") as status:
        done = [0]

        def tick(name: str) -> None:
            done[0] += 1
            status.update(f"calibrating {tg.name}/{rt}/{precision}: {done[0]}/{n} ({name})")

        cal = run_calibration(tg, rt, precision, measure, on_model=tick)
    console.print(f"{cal.describe()}; stored in {calibration_dir()} and used by predictions from now on")


@app.command()
@user_errors
def agent(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the agent to the network."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding the bearer token (else EDGEKD_AGENT_TOKEN)."),
    target: str = typer.Option("cpu", "--target", "-t", help="What this device is (a target name)."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="Largest request accepted, MB."),
    job_timeout: float = typer.Option(300.0, "--job-timeout", help="Time limit of one profiling job, s."),
    queue: int = typer.Option(4, "--queue", min=0, help="Jobs that may wait while one runs; more get 429."),
) -> None:
    """Run the on-device agent: an authenticated HTTP service that profiles submitted ONNX models."""
    import uvicorn

    from .agent.client import read_token
    from .agent.server import AgentConfig, create_app
    from .targets import get_target

    get_target(target)  # an unknown target is an error before the port opens
    token = read_token(token_file)
    if len(token) < 16:
        raise EdgeKDError("the agent token is shorter than 16 characters; make one with: "
                          "python -c 'import secrets; print(secrets.token_hex(32))' > agent.token")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]note:[/] the agent listens on {host}: reachable from the network, token required")
    cfg = AgentConfig(token=token, target=target, max_body_mb=max_body_mb, job_timeout_s=job_timeout, queue_size=queue)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info")


def main() -> None:
    app(prog_name="edgekd")


if __name__ == "__main__":
    sys.exit(main())
