"""`edgekd optimize`: the distiller loop of DESIGN.md section 2.

teacher (load or train) -> teacher outputs cached once (memory-mapped) -> the search
(proposals, screening, KD training by successive halving, each rung exported, profiled on the
target and scored by J) -> select -> export the selected student with parity checks -> report."""

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
from .host import default_threads, software_versions
from .console import make_console
from .data import Dataset, data_source, load_dataset
from .distill.losses import KDSettings, parse_kd
from .distill.losses import needs as kd_needs
from .distill.teacher import TeacherOutputs
from .distill.trainer import Unlabeled, evaluate, predict_logits, steps, train
from .errors import CheckpointError, ConfigError, DataError, RunDirError
from .export import FORMATS
from .convert.onnx import to_onnx
from .export.run import export_formats, export_metadata
from .models.family import EdgeNet, build_model
from .models.io import load_checkpoint, save_checkpoint
from .models.stats import count_macs, count_params
from .profilers import MeasurementCache, ProfileSettings
from .profilers.cache import default_cache_dir
from .measurers import measurer_for
from .profilers.measurement import Measurement
from .report import write_reports
from .search.candidates import Candidate
from .search.engine import Search, SearchContext, finalize_checkpoint, macs_params
from .search.objective import Costs, Scored, select
from .search.pareto import pareto_front
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


def _load_teachers(cfg: RunConfig, ds: Dataset, run_dir: Path, resume: bool) -> tuple[EdgeNet | None, str, list[EdgeNet]]:
    """(the given or resumed main teacher or None, its origin, extra teachers); all checked
    against the data set before anything is written."""
    main, origin = None, ""
    path = cfg.teacher
    if resume and (run_dir / "teacher.pt").exists():
        path, origin = run_dir / "teacher.pt", "resumed from the run directory"
    if path is not None:
        main, meta = load_checkpoint(path)
        _teacher_matches(meta, ds, path)
        origin = origin or f"given: {path}"
    extra = []
    for p in cfg.teachers:
        m, meta = load_checkpoint(p)
        _teacher_matches(meta, ds, p)
        extra.append(m)
    return main, origin, extra


def run_optimize(cfg: RunConfig, console: Console | None = None, resume: bool = False) -> Path:
    """Run the whole loop; returns the run directory holding report.json. With `resume`, the
    run directory of a stopped run is continued: finished work is read back, not redone."""
    console = console or make_console(cfg.quiet)
    say = (lambda *a, **k: None) if cfg.quiet else console.print
    t_start = time.perf_counter()
    timer = StageTimer()
    torch.manual_seed(cfg.seed)

    # -- everything a user can get wrong is checked before anything is written --
    target = get_target(cfg.target)
    budget_ms = cfg.budget_ms if cfg.budget_ms is not None else target.default_budget_ms
    terms = parse_kd(cfg.kd)
    want = kd_needs(terms)
    if "teachers" in want and not cfg.teachers:
        raise ConfigError("--kd multi-teacher needs more teachers: add --teacher-extra PATH (one or more)")
    if "unlabeled" in want and cfg.unlabeled is None:
        raise ConfigError("--kd semi-supervised needs unlabelled images: pass --unlabeled DIR")
    run_dir = cfg.out if resume else prepare_run_dir(cfg, target)
    with timer("data"):
        ds = load_dataset(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction, image_size=cfg.image_size,
                          samples_per_class=cfg.samples_per_class, max_samples_per_class=cfg.max_samples_per_class)
        unl_x = load_unlabeled(cfg.unlabeled, ds) if cfg.unlabeled is not None else None
    given_teacher, teacher_origin, extra_teachers = _load_teachers(cfg, ds, run_dir, resume)
    threads = cfg.threads or default_threads()
    prof = ProfileSettings(threads=threads, warmup=cfg.profile_warmup, min_runs=cfg.profile_min_runs,
                           min_seconds=cfg.profile_min_seconds, energy_meter=cfg.energy_meter)
    cache = None if cfg.no_cache else MeasurementCache(
        (cfg.cache_dir or default_cache_dir()) / "measurements.sqlite")
    measurer = measurer_for(target, prof, cache, cfg.device_url, cfg.device_token_file)
    run_id = uuid.uuid4().hex[:12]

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True),
                                                            sort_keys=False))
    say(f"[bold]edgekd optimize[/] target [cyan]{target.name}[/] budget {budget_ms:g} ms -> {run_dir}"
        + (" (resumed)" if resume else ""))
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
    kd_settings = KDSettings(alpha=cfg.kd_alpha, temperature=cfg.kd_temperature,
                             teacher_weights=tuple(cfg.teacher_weights or [1.0] * (1 + len(extra_teachers))),
                             robust_rho=cfg.robust_rho, feature_distance=cfg.feature_distance)

    with _progress(console, cfg.quiet) as progress:
        # -- teacher --
        with timer("teacher"):
            if given_teacher is not None:
                teacher = given_teacher
                teacher_loss: list[float] = []
            else:
                teacher = build_model(cfg.teacher_arch, ds.in_channels, len(ds.classes), mean, std)
                say(f"training teacher {cfg.teacher_arch.name} ({cfg.teacher_epochs} epochs)")
                task = progress.add_task("teacher", total=steps(len(ds.y_train), cfg.batch_size, cfg.teacher_epochs),
                                         info=cfg.teacher_arch.name)
                hist = train(teacher, ds.x_train, ds.y_train, epochs=cfg.teacher_epochs, batch_size=cfg.batch_size,
                             lr=cfg.lr, seed=cfg.seed, on_step=lambda: progress.advance(task))
                teacher_origin, teacher_loss = "trained by this run", hist.epoch_loss
            if not (run_dir / "teacher.pt").exists() or not resume:
                save_checkpoint(run_dir / "teacher.pt", teacher, role="teacher", **ckpt_meta)
        with timer("teacher_outputs"):
            # computed once, memory-mapped, shared by every candidate and rung
            teachers = [teacher, *extra_teachers]
            outputs = TeacherOutputs.build(run_dir / "teacher_cache", teachers, ds.x_train, views=cfg.teacher_views,
                                           features="features" in want, embedding="embedding" in want)
            unlabeled = None
            if unl_x is not None:
                unlabeled = Unlabeled(unl_x, TeacherOutputs.build(run_dir / "teacher_cache", [teacher], unl_x,
                                                                  views=cfg.teacher_views))
            t_val = predict_logits(teacher, ds.x_val)
        teacher_eval = evaluate(t_val, ds.y_val)
        say(f"teacher {teacher.arch.name} ({teacher_origin}): val accuracy {teacher_eval['accuracy']:.3f}")

        # -- the teacher on the target: the reference of C_hw --
        say(f"measurements: {measurer.describe}"
            + (f" (batch 1, >= {cfg.profile_min_runs} runs and >= {cfg.profile_min_seconds:g} s each)"
               if measurer.mode != "predicted" else ""), style="bold yellow" if measurer.mode == "predicted" else None)
        with timer("profiling"):
            teacher_meas_file = run_dir / "teacher_measurement.json"
            if resume and teacher_meas_file.exists():
                teacher_meas = Measurement.model_validate_json(teacher_meas_file.read_text())
            else:
                teacher_onnx = to_onnx(teacher, run_dir / "teacher.onnx", shape)
                teacher_meas = measurer.measure(teacher_onnx, shape)
                teacher_meas_file.write_text(teacher_meas.model_dump_json())

        # -- the search: proposals, screening, KD training by successive halving --
        ctx = SearchContext(
            cfg=cfg, ds=ds, mean=mean, std=std, teacher=outputs, teacher_channels=teacher.stage_channels, t_val=t_val,
            terms=terms, kd=kd_settings, unlabeled=unlabeled, measurer=measurer, shape=shape, target=target,
            budget_ms=budget_ms, reference=_costs(teacher_meas), run_dir=run_dir, ckpt_meta=ckpt_meta,
            threads=threads, say=say, progress=progress,
            deadline=None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes)
        search = Search(ctx)
        trials = search.run()
        for stage, sec in ctx.seconds.items():
            timer.seconds[stage] = round(timer.seconds.get(stage, 0.0) + sec, 3)

    # -- candidates: every trial that completed at least one rung, scored by its last rung --
    candidates: list[Candidate] = []
    for t in trials:
        last = t.last
        if last is None or t.status.startswith("duplicate"):
            continue
        params, macs = macs_params(t.arch, ds, shape)
        candidates.append(Candidate(
            name=t.name, precision=t.precision, arch=t.arch, params=params, macs=macs,
            checkpoint=str(run_dir / "candidates" / t.arch.name / f"rung{last.rung}.pt"), onnx=last.onnx,
            val_accuracy=last.val_accuracy, val_kd_loss=last.val_kd_loss, val_cross_entropy=last.val_cross_entropy,
            train_seconds=sum(r.train_seconds for r in t.rungs), train_loss=[v for r in t.rungs for v in r.train_loss], measurement=last.measurement,
            hardware_cost=last.hardware_cost, c_hw=last.hardware_cost.c_hw, penalty=last.penalty,
            meets_budget=last.meets_budget, fits_memory=last.fits_memory, objective=last.objective,
            status=t.status, epochs=last.epochs))
    if not candidates:
        raise ConfigError("no candidate was trained: every proposal was screened out or the time budget ran out; "
                          "raise --budget-ms, add smaller candidates, or give --max-minutes more time")
    try:
        selected, reason = select([Scored(c.name, c.objective, c.meets_budget, c.measurement.latency_ms.p90,
                                          c.fits_memory) for c in candidates], budget_ms)
    except ValueError:
        raise ConfigError(f"no candidate fits the memory budget of {target.name} ({target.memory_budget_mb:g} MB); "
                          "add smaller candidates or raise memory_budget_mb in a target file") from None
    front = [candidates[i].name for i in pareto_front(
        [(-c.val_accuracy, c.measurement.latency_ms.p90, c.measurement.energy_mj or 0.0) for c in candidates])]
    _print_candidates(console, cfg.quiet, candidates, selected, teacher_meas)
    say(f"selected [bold green]{selected}[/]: {reason}")

    # -- export the selected student, each format checked against PyTorch --
    best = next(c for c in candidates if c.name == selected)
    best_rung = int(Path(best.checkpoint).stem.removeprefix("rung"))
    student_ckpt = finalize_checkpoint(run_dir, best.arch, best_rung)
    student, _ = load_checkpoint(student_ckpt)
    formats = list(cfg.export_formats)
    if best.precision == "int8" and not any(FORMATS[f].precision == "int8" for f in formats if f in FORMATS):
        formats.append("onnx-int8")  # the selected student is its INT8 version: ship that
    with timer("export"):
        exports = export_formats(student, ds, formats, run_dir / "exports", f"student-{best.arch.name}",
                                 export_metadata(ds, selected, run_id, mean, std),
                                 calibration_size=cfg.calibration_size, max_accuracy_drop=cfg.max_accuracy_drop,
                                 tolerances=cfg.parity, threads=threads, seed=cfg.seed)
    for e in exports:
        say(f"export {e.format}: {e.path} (top-1 agreement {e.parity.top1_agreement:.4f}, "
            f"max |diff| {e.parity.max_abs_diff:.2e})")

    wasted = sum(r.train_seconds for t in trials for r in t.rungs if t.last is not None and not t.last.meets_budget)
    report = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "resumed": resume,
        "target": target.model_dump(mode="json"),
        "budget_ms": budget_ms,
        "budget_source": "--budget-ms" if cfg.budget_ms is not None else f"default of target {target.name}",
        "measurement": {"mode": measurer.mode, "runtime": measurer.runtime, "how": measurer.describe},
        "objective": {
            "lambda": cfg.lambda_, "gamma": cfg.gamma, "delta": cfg.delta, "delta_unit": "per mJ per inference",
            "weights": {"latency": cfg.w_latency, "memory": cfg.w_memory, "energy": cfg.w_energy},
            "reference": "teacher measured on the same target and runtime",
            "latency_statistic": "p50 in C_hw; p90 in the real-time penalty",
            "penalty": "indicator: gamma * 1[p90 > budget_ms]",
            "kd": {"terms": [{"name": n, "weight": w} for n, w in terms], "alpha": cfg.kd_alpha,
                   "temperature": cfg.kd_temperature, "teacher_views": cfg.teacher_views},
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
                     "teacher_outputs": f"computed once for {cfg.teacher_views} dihedral view(s) of every training "
                                        "image, memory-mapped under teacher_cache/, shared by every candidate"},
        "search": {"mode": cfg.search, "rung_epochs": search.epochs, "eta": cfg.eta,
                   "proposals": len(trials), "screened_out": sum(t.status.startswith("screened") for t in trials),
                   "screen": {"on": cfg.screen, "slack": cfg.screen_slack},
                   "train_seconds_total": round(sum(r.train_seconds for t in trials for r in t.rungs), 2),
                   "train_seconds_on_over_budget_students": round(wasted, 2)},
        "candidates": [c.model_dump(mode="json") for c in candidates],
        "trials": [t.model_dump(mode="json", exclude={"rungs": {"__all__": {"measurement"}}}) for t in trials],
        "pareto_front": front,
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


def load_unlabeled(folder: Path, ds: Dataset) -> torch.Tensor:
    """Images of a folder (any depth, no labels needed) at the data set's size and bands."""
    from .data.folder import unlabeled_images

    x = unlabeled_images(folder, ds.image_size)
    if x.shape[1] != ds.in_channels:
        raise DataError(f"unlabelled images in {folder} have {x.shape[1]} bands, the data set {ds.in_channels}")
    return x


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

