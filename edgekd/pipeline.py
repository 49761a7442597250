"""`edgekd optimize`: the distiller loop of DESIGN.md section 2, once through.

teacher (load or train) -> teacher logits cached once -> KD-train every candidate ->
export each to ONNX and profile it on the target -> C_hw, P_rt, J -> select ->
export the selected student (ONNX, OpenVINO IR) with parity checks -> report."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psutil
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .config import RunConfig
from .console import make_console
from .data import Dataset, data_source, load_dataset
from .distill.trainer import cached_targets, evaluate, predict_logits, steps, train
from .errors import CheckpointError, ConfigError, RunDirError
from .export import FORMATS
from .export.onnx import to_onnx
from .export.onnx_int8 import calibration_batches, quantize_qdq
from .export.run import calibration_subset, export_formats, export_metadata
from .models.family import EdgeNet, build_model
from .models.io import load_checkpoint, save_checkpoint
from .models.stats import count_macs, count_params
from .profilers import MeasurementCache, ProfileSettings, profile_model
from .profilers.cache import default_cache_dir
from .profilers.where import measurer_for
from .profilers.measurement import Measurement
from .report import write_reports
from .search.candidates import Candidate, unique_archs
from .search.objective import Costs, CostWeights, Scored, hardware_cost, objective, realtime_penalty, select
from .targets import Target, get_target

SCHEMA_VERSION = 1


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)


def default_threads() -> int:
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def software_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import openvino

    return {
        "edgekd": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "numpy": numpy.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version(),
    }


def prepare_run_dir(cfg: RunConfig, target: Target) -> Path:
    """The run directory, checked but not yet written: a non-empty folder is refused unless
    --overwrite; an unwritable place is refused before any work is done."""
    out = cfg.out or Path("runs") / f"{target.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; pass a folder path for the run directory")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise RunDirError(f"run directory {out} already holds files; pass a new --out folder "
                          "(or --overwrite to write over the run in it)")
    probe_dir = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe_dir.is_dir():
        raise RunDirError(f"--out {out} lies under the file {probe_dir}; pass a folder path for the run directory")
    try:  # a real write: permission bits do not tell the whole story (read-only mounts, root)
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as exc:
        raise RunDirError(f"cannot write to {probe_dir} for the run directory {out} ({exc.strerror}); "
                          "pass --out in a folder you can write to") from None
    return out


def _teacher_matches(meta: dict[str, Any], ds: Dataset, path: Path) -> None:
    if meta["classes"] != ds.classes:
        raise CheckpointError(
            f"teacher {path} was trained on classes {meta['classes']}, but the data set has "
            f"{ds.classes}; pass a teacher trained on this data set, or leave out --teacher to train one")
    if int(meta["in_channels"]) != ds.in_channels:
        raise CheckpointError(
            f"teacher {path} takes {meta['in_channels']} input bands, the data set has {ds.in_channels} "
            f"({', '.join(ds.bands)}); pass a matching teacher or leave out --teacher")


def _progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, disable=quiet or not console.is_terminal, transient=False,
    )


def _input_shape(ds: Dataset) -> list[int]:
    return [1, ds.in_channels, ds.image_size, ds.image_size]


def run_optimize(cfg: RunConfig, console: Console | None = None) -> Path:
    """Run the whole loop; returns the run directory holding report.json."""
    console = console or make_console(cfg.quiet)
    say = (lambda *a, **k: None) if cfg.quiet else console.print
    t_start = time.perf_counter()
    timer = StageTimer()
    torch.manual_seed(cfg.seed)

    # -- everything a user can get wrong is checked before anything is written --
    target = get_target(cfg.target)
    budget_ms = cfg.budget_ms if cfg.budget_ms is not None else target.default_budget_ms
    run_dir = prepare_run_dir(cfg, target)
    with timer("data"):
        ds = load_dataset(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction, image_size=cfg.image_size,
                          samples_per_class=cfg.samples_per_class, max_samples_per_class=cfg.max_samples_per_class)
    given_teacher: EdgeNet | None = None
    if cfg.teacher is not None:
        given_teacher, meta = load_checkpoint(cfg.teacher)
        _teacher_matches(meta, ds, cfg.teacher)
    threads = cfg.threads or default_threads()
    prof = ProfileSettings(threads=threads, warmup=cfg.profile_warmup, min_runs=cfg.profile_min_runs,
                           min_seconds=cfg.profile_min_seconds, energy_meter=cfg.energy_meter)
    cache = None if cfg.no_cache else MeasurementCache(
        (cfg.cache_dir or default_cache_dir()) / "measurements.sqlite")
    measurer = measurer_for(target, prof, cache, cfg.device_url, cfg.device_token_file)
    run_id = uuid.uuid4().hex[:12]

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False))
    say(f"[bold]edgekd optimize[/] target [cyan]{target.name}[/] budget {budget_ms:g} ms -> {run_dir}")
    say(f"data: {ds.name} ({'synthetic' if ds.synthetic else 'image folder'}), {len(ds.classes)} classes, "
        f"{len(ds.y_train)} train / {len(ds.y_val)} val, {ds.in_channels}x{ds.image_size}x{ds.image_size}"
        + (f", {len(ds.skipped_files)} unreadable files skipped" if ds.skipped_files else ""))

    mean, std = ds.channel_stats()
    shape = _input_shape(ds)
    ckpt_meta = dict(classes=ds.classes, bands=ds.bands, image_size=ds.image_size, dataset=ds.name,
                     data_source=data_source(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction,
                                             image_size=cfg.image_size, samples_per_class=cfg.samples_per_class,
                                             max_samples_per_class=cfg.max_samples_per_class))
    train_threads = torch.get_num_threads()

    with _progress(console, cfg.quiet) as progress:
        # -- teacher --
        with timer("teacher"):
            if given_teacher is not None:
                teacher, teacher_origin = given_teacher, f"given: {cfg.teacher}"
                teacher_loss: list[float] = []
            else:
                teacher = build_model(cfg.teacher_arch, ds.in_channels, len(ds.classes), mean, std)
                say(f"training teacher {cfg.teacher_arch.name} ({cfg.teacher_epochs} epochs)")
                task = progress.add_task("teacher", total=steps(len(ds.y_train), cfg.batch_size, cfg.teacher_epochs),
                                         info=cfg.teacher_arch.name)
                hist = train(teacher, ds.x_train, ds.y_train, epochs=cfg.teacher_epochs, batch_size=cfg.batch_size,
                             lr=cfg.lr, seed=cfg.seed, on_step=lambda: progress.advance(task))
                teacher_origin, teacher_loss = "trained by this run", hist.epoch_loss
            save_checkpoint(run_dir / "teacher.pt", teacher, role="teacher", **ckpt_meta)
        with timer("teacher_logits"):
            t_train = predict_logits(teacher, ds.x_train)  # computed once, shared by every candidate
            t_val = predict_logits(teacher, ds.x_val)
        teacher_eval = evaluate(t_val, ds.y_val)
        say(f"teacher {teacher.arch.name} ({teacher_origin}): val accuracy {teacher_eval['accuracy']:.3f}")

        # -- candidates: KD training --
        archs = unique_archs(cfg.candidates)
        say(f"distilling {len(archs)} candidates ({cfg.student_epochs} epochs each, cached teacher logits)")
        trained: list[dict[str, Any]] = []
        for arch in archs:
            with timer("kd_training"):
                student = build_model(arch, ds.in_channels, len(ds.classes), mean, std)
                task = progress.add_task(f"KD {arch.name}", total=steps(len(ds.y_train), cfg.batch_size, cfg.student_epochs),
                                         info=f"{count_params(student):,} params")
                hist = train(student, ds.x_train, ds.y_train, epochs=cfg.student_epochs, batch_size=cfg.batch_size,
                             lr=cfg.lr, seed=cfg.seed, soft_targets=cached_targets(t_train), alpha=cfg.kd_alpha,
                             temperature=cfg.kd_temperature, on_step=lambda: progress.advance(task))
                ev = evaluate(predict_logits(student, ds.x_val), ds.y_val, t_val, cfg.kd_alpha, cfg.kd_temperature)
                cdir = run_dir / "candidates" / arch.name
                cdir.mkdir(parents=True, exist_ok=True)
                save_checkpoint(cdir / "student.pt", student, role="student", metrics=ev, **ckpt_meta)
            trained.append({"arch": arch, "model": student, "eval": ev, "hist": hist, "dir": cdir})
            say(f"KD {arch.name}: val accuracy {ev['accuracy']:.3f}, KD loss {ev['kd_loss']:.3f} "
                f"({sum(hist.epoch_seconds):.1f} s)")

        # -- profiling on the target (teacher first: it is the reference of C_hw) --
        ptask = progress.add_task("profile", total=len(trained) + 1, info=measurer.mode)
        say(f"teacher and {len(trained)} students: {measurer.describe}"
            + (f" (batch 1, >= {cfg.profile_min_runs} runs and >= {cfg.profile_min_seconds:g} s each)"
               if measurer.mode != "predicted" else ""), style="bold yellow" if measurer.mode == "predicted" else None)
        with timer("profiling"):
            teacher_onnx = to_onnx(teacher, run_dir / "teacher.onnx", shape)
            teacher_meas = measurer(teacher_onnx, shape)
            progress.advance(ptask)
            for item in trained:
                onnx_path = to_onnx(item["model"], item["dir"] / "model.onnx", shape)
                item["onnx"] = onnx_path
                item["measurement"] = measurer(onnx_path, shape)
                progress.advance(ptask)

        # -- precision as a search dimension: INT8 variants scored by measured INT8 latency and
        #    post-quantization accuracy --
        variants = [dict(item, precision="fp32", name=item["arch"].name) for item in trained]
        if "int8" in cfg.precisions:
            say(f"INT8 variants: static Q/DQ quantization calibrated on {cfg.calibration_size} training images")
            calib = calibration_batches(calibration_subset(ds, cfg.calibration_size, cfg.seed), [1, *shape[1:]])
            qtask = progress.add_task("INT8", total=len(trained), info=measurer.mode)
            with timer("quantization"):
                for item in trained:
                    q_path = quantize_qdq(item["onnx"], item["dir"] / "model.int8.onnx", calib,
                                          symmetric=measurer.runtime == "tensorrt")
                    q_logits = onnx_logits(q_path, ds.x_val, threads)
                    ev = evaluate(q_logits, ds.y_val, t_val, cfg.kd_alpha, cfg.kd_temperature)
                    variants.append(dict(item, precision="int8", name=f"{item['arch'].name}@int8", onnx=q_path,
                                         eval=ev, measurement=measurer(q_path, shape, "int8")))
                    progress.advance(qtask)

    # -- objective and selection --
    weights = CostWeights(cfg.w_latency, cfg.w_memory, cfg.w_energy)
    ref = _costs(teacher_meas)
    candidates: list[Candidate] = []
    for item in variants:
        m: Measurement = item["measurement"]
        hw = hardware_cost(_costs(m), ref, weights)
        pen = realtime_penalty(m.latency_ms.p90, budget_ms, cfg.gamma)
        candidates.append(Candidate(
            name=item["name"], precision=item["precision"], arch=item["arch"], params=count_params(item["model"]),
            macs=count_macs(item["model"], tuple(shape)), checkpoint=str(item["dir"] / "student.pt"),
            onnx=str(item["onnx"]), val_accuracy=item["eval"]["accuracy"], val_kd_loss=item["eval"]["kd_loss"],
            val_cross_entropy=item["eval"]["cross_entropy"], train_seconds=round(sum(item["hist"].epoch_seconds), 3),
            train_loss=item["hist"].epoch_loss, measurement=m, hardware_cost=hw, c_hw=hw.c_hw, penalty=pen,
            meets_budget=m.latency_ms.p90 <= budget_ms,
            fits_memory=_fits(m, target),
            objective=objective(item["eval"]["kd_loss"], hw.c_hw, pen, m.energy_mj, cfg.lambda_, cfg.delta),
        ))
    try:
        selected, reason = select([Scored(c.name, c.objective, c.meets_budget, c.measurement.latency_ms.p90,
                                          c.fits_memory) for c in candidates], budget_ms)
    except ValueError:
        raise ConfigError(f"no candidate fits the memory budget of {target.name} ({target.memory_budget_mb:g} MB); "
                          "add smaller candidates or raise memory_budget_mb in a target file") from None
    _print_candidates(console, cfg.quiet, candidates, selected, teacher_meas)
    say(f"selected [bold green]{selected}[/]: {reason}")

    # -- export the selected student, each format checked against PyTorch --
    best = next(i for i in variants if i["name"] == selected)
    formats = list(cfg.export_formats)
    if best["precision"] == "int8" and not any(FORMATS[f].precision == "int8" for f in formats if f in FORMATS):
        formats.append("onnx-int8")  # the selected student is its INT8 version: ship that
    with timer("export"):
        exports = export_formats(best["model"], ds, formats, run_dir / "exports", f"student-{best['arch'].name}",
                                 export_metadata(ds, selected, run_id, mean, std),
                                 calibration_size=cfg.calibration_size, max_accuracy_drop=cfg.max_accuracy_drop,
                                 tolerances=cfg.parity, threads=threads, seed=cfg.seed)
    for e in exports:
        say(f"export {e.format}: {e.path} (top-1 agreement {e.parity.top1_agreement:.4f}, "
            f"max |diff| {e.parity.max_abs_diff:.2e})")

    report = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "target": target.model_dump(mode="json"),
        "budget_ms": budget_ms,
        "budget_source": "--budget-ms" if cfg.budget_ms is not None else f"default of target {target.name}",
        "measurement": {"mode": measurer.mode, "runtime": measurer.runtime, "how": measurer.describe},
        "objective": {
            "lambda": cfg.lambda_, "gamma": cfg.gamma, "delta": cfg.delta, "delta_unit": "per mJ per inference",
            "weights": {"latency": weights.latency, "memory": weights.memory, "energy": weights.energy},
            "reference": "teacher measured on the same target and runtime",
            "latency_statistic": "p50 in C_hw; p90 in the real-time penalty",
            "penalty": "indicator: gamma * 1[p90 > budget_ms]",
            "kd": {"loss": "response", "alpha": cfg.kd_alpha, "temperature": cfg.kd_temperature},
        },
        "dataset": ds.summary(),
        "teacher": {
            "name": teacher.arch.name, "arch": teacher.arch.model_dump(), "origin": teacher_origin,
            "params": count_params(teacher), "macs": count_macs(teacher, tuple(shape)),
            "checkpoint": str(run_dir / "teacher.pt"), "val_accuracy": teacher_eval["accuracy"],
            "val_cross_entropy": teacher_eval["cross_entropy"], "train_loss": teacher_loss,
            "measurement": teacher_meas.model_dump(mode="json"),
        },
        "training": {"epochs_teacher": cfg.teacher_epochs, "epochs_student": cfg.student_epochs,
                     "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed, "torch_threads": train_threads,
                     "teacher_logits": "computed once for the training and validation sets, reused by every candidate"},
        "candidates": [c.model_dump(mode="json") for c in candidates],
        "selected": selected,
        "selection_reason": reason,
        "exports": [e.model_dump(mode="json") for e in exports],
        "software": software_versions(),
        "stage_seconds": timer.seconds,
        "config": cfg.model_dump(mode="json", by_alias=True),
    }
    report["stage_seconds"]["total"] = round(time.perf_counter() - t_start, 3)
    write_reports(run_dir, report)
    say(f"report: {run_dir / 'report.md'} and {run_dir / 'report.json'} "
        f"(total {report['stage_seconds']['total']:.1f} s)")
    return run_dir


def onnx_logits(path: Path, x: torch.Tensor, threads: int, batch_size: int = 64) -> torch.Tensor:
    """Logits of an ONNX model (e.g. its INT8 version) on `x`, from ONNX Runtime on this CPU."""
    from .profilers import load_runtime

    loaded = load_runtime("onnxruntime", path, threads, "int8")
    try:
        return torch.cat([torch.from_numpy(loaded.run(x[i:i + batch_size].numpy()))
                          for i in range(0, len(x), batch_size)])
    finally:
        loaded.close()


def _fits(m: Measurement, target: Target) -> bool:
    """Hard constraint: peak memory within the target's budget (unknown memory counts as fitting)."""
    if m.peak_memory_mb is None or target.memory_budget_mb is None:
        return True
    return m.peak_memory_mb <= target.memory_budget_mb


def _costs(m: Measurement) -> Costs:
    return Costs(m.latency_ms.p50, m.peak_memory_mb, m.energy_mj)


def _print_candidates(console: Console, quiet: bool, cands: list[Candidate], selected: str, teacher: Measurement) -> None:
    if quiet:
        return
    m0 = teacher
    how = m0.source["latency"]
    cond = f"{m0.runtime}, batch {m0.batch}" + (f", {m0.threads} threads" if how != "predicted" else "")
    t = Table(title=f"candidates: latency {how.upper() if how == 'predicted' else how} ({cond}), "
                    f"energy {m0.source.get('energy', 'not measured')}")
    for col in ("name", "params", "MMACs", "val acc", "KD loss", "p50 ms", "p90 ms", "peak MB",
                "mJ", "C_hw", "P_rt", "J"):
        t.add_column(col, justify="left" if col == "name" else "right")
    t.add_row("(teacher)", "", "", "", "", f"{m0.latency_ms.p50:.3f}", f"{m0.latency_ms.p90:.3f}",
              _fmt(m0.peak_memory_mb), _fmt(m0.energy_mj, 3), "1 (ref)", "", "", style="dim")
    for c in sorted(cands, key=lambda c: c.objective):
        m = c.measurement
        style = "bold green" if c.name == selected else None
        t.add_row(c.name, f"{c.params:,}", f"{c.macs / 1e6:.2f}", f"{c.val_accuracy:.3f}", f"{c.val_kd_loss:.3f}",
                  f"{m.latency_ms.p50:.3f}", f"{m.latency_ms.p90:.3f}", _fmt(m.peak_memory_mb),
                  _fmt(m.energy_mj, 3), f"{c.c_hw:.3f}", f"{c.penalty:g}", f"{c.objective:.3f}", style=style)
    console.print(t)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"

