"""`edgekd update`: incremental distillation. The selected student of an earlier run continues on
new data with L = L_KD(T_t, S_t) + mu * L_history(S_t, S_{t-1}): the (possibly new) teacher's
KD terms plus the previous student's outputs distilled into the updated one, on the new images
and a replay sample of the old ones where the old data is still reachable. Classes only the new
data has extend the student's head (the old rows unchanged) and, unless a new teacher is given,
the teacher's (fine-tuned on the same images). The update is then measured, exported and
checked like any selected student, and update.json / update.md say what was forgotten: accuracy
on the old classes and on the new ones, before and after. mu = 0 is plain fine-tuning."""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from ..console import ConsoleObserver
from ..convert.onnx import to_onnx
from ..data import Dataset, data_source, load_dataset
from ..data.dataset import class_labels
from ..distill.losses import KDSettings, needs, parse_kd
from ..distill.teacher import TeacherOutputs
from ..distill.trainer import History, predict_logits, train
from ..errors import ConfigError, DataError, Interrupted
from ..export import ExportResult
from ..export.run import export_formats, export_metadata
from ..files import atomic_write
from ..host import default_threads, software_versions
from ..measurers import measurer_for
from ..models.heads import extend_head
from ..models.io import Net, load_checkpoint, save_checkpoint
from ..models.stats import count_params
from ..profilers import MeasurementCache, ProfileSettings
from ..profilers.cache import default_cache_dir
from ..profilers.measurement import Measurement
from ..targets import get_target
from .lineage import UPDATE_RECORD, Previous, Settings, Source, merge, old_data, read_previous, union_classes
from .plan import StageTimer, lock_run_dir, resolve_exports
from .stages import relative
from .update_progress import Progress, resume_command

UPDATE_TERMS = ("response", "feature", "relation", "robust")  # KD terms an update can carry over


@dataclass
class UpdateOptions:
    previous: Path
    data: Path
    out: Path
    teacher: Path | None = None
    mu: float = 1.0
    epochs: int | None = None  # default: the earlier run's student epochs
    teacher_epochs: int = 3  # fine-tuning of a teacher whose head was extended
    lr: float | None = None
    replay_fraction: float = 1.0
    target: str | None = None
    export_formats: list[str] | None = None
    threads: int | None = None
    device_url: str | None = None
    device_token_file: Path | None = None
    overwrite: bool = False
    resume: bool = False  # continue the interrupted update in --out
    no_cache: bool = False
    quiet: bool = False


class ClassAccuracy(BaseModel):
    """Validation accuracy on the previous classes' images, on the added classes' images, and
    on all; a student that lacks a class in its head scores 0 on its images."""

    old_classes: float | None
    new_classes: float | None
    all: float
    n_old: int
    n_new: int


class UpdateReport(BaseModel):
    """update.json: an incremental update, every figure with its source and conditions."""

    format: str = "edgekd-update/1"
    run_id: str
    created: str
    command: str
    resumed: bool = False  # continued with --resume after an interruption
    previous_run: str
    previous_student: str
    previous_classes: list[str]
    classes: list[str]
    classes_added: list[str]
    bands: list[str]
    image_size: int
    data: dict[str, object]
    replay_images: int
    notes: list[str]
    teacher: str
    teacher_accuracy: ClassAccuracy
    kd_terms: list[str]
    mu: float
    epochs: int
    lr: float
    train_seconds: float
    train_loss: list[float]
    before: ClassAccuracy  # the previous student, on this update's validation images
    after: ClassAccuracy
    forgetting_points: float | None  # old-class accuracy before - after, in points
    student: dict[str, object]
    measurement: Measurement
    budget_ms: float | None
    meets_budget: bool | None
    exports: list[ExportResult]
    settings: Settings
    lineage: list[Source]
    stage_seconds: dict[str, float]
    software: dict[str, str]


def class_accuracy(logits: torch.Tensor, y: torch.Tensor, n_old: int) -> ClassAccuracy:
    pred = logits.argmax(1)
    old, new = y < n_old, y >= n_old
    hit = (pred == y).float()
    return ClassAccuracy(old_classes=float(hit[old].mean()) if old.any() else None,
                         new_classes=float(hit[new].mean()) if new.any() else None, all=float(hit.mean()),
                         n_old=int(old.sum()), n_new=int(new.sum()))


def _prepare_out(opts: UpdateOptions) -> None:
    out = opts.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for the updated run")
    if out.resolve() == opts.previous.resolve():
        raise ConfigError("--out is the run being updated; pass a new folder (the earlier run stays as it is)")
    if opts.resume and opts.overwrite:
        raise ConfigError("--resume continues the update in --out, --overwrite starts it again: pass one of them")


def _data(opts: UpdateOptions, prev: Previous, observer: ConsoleObserver) -> tuple[Dataset, int, list[str], dict]:
    s = prev.settings
    new = load_dataset(opts.data, seed=s.seed, val_fraction=s.val_fraction, image_size=prev.image_size,
                       samples_per_class=0, max_samples_per_class=None, min_classes=1,
                       bands=prev.lineage[-1].data_source.get("bands") if prev.lineage else None)
    if new.in_channels != len(prev.bands):
        raise DataError(f"--data {opts.data} has {new.in_channels} bands ({', '.join(new.bands)}), the student of "
                        f"{prev.run_dir} takes {len(prev.bands)} ({', '.join(prev.bands)}); an update keeps the bands")
    source = data_source(opts.data, seed=s.seed, val_fraction=s.val_fraction, image_size=prev.image_size,
                         samples_per_class=0, max_samples_per_class=None,
                         bands=prev.lineage[-1].data_source.get("bands") if prev.lineage else None)
    classes = union_classes(prev.classes, new.classes)
    old, notes = old_data(prev.lineage, source, prev.image_size, classes)
    if prev.precision != "fp32":
        notes.append(f"the earlier student was selected at {prev.precision}; the update continues its FP32 weights "
                     "and measures them at FP32 (quantize the update with edgekd export --formats onnx-int8)")
    if not old:
        notes.append("no earlier data reachable: no replay, and the old classes are scored on the new data's images "
                     "of them only")
    ds, replayed = merge(new, old, classes, opts.replay_fraction, s.seed)
    added = classes[len(prev.classes):]
    observer.say(f"data: {new.name}, {len(new.y_train)} new training images ({len(added)} new classes"
                 f"{': ' + ', '.join(added) if added else ''}) + {replayed} replayed; {len(ds.y_val)} validation")
    for n in notes:
        observer.say(n, style="yellow")
    return ds, replayed, notes, source


def _teacher(opts: UpdateOptions, prev: Previous, ds: Dataset, observer: ConsoleObserver,
             lr: float) -> tuple[Net, str]:
    """The teacher of this step: the given one (it must know every class), else the earlier
    run's, its head extended and fine-tuned on this step's images when classes were added."""
    if opts.teacher is not None:
        teacher, meta = load_checkpoint(opts.teacher)
        if meta["classes"] != ds.classes:
            raise ConfigError(f"--teacher {opts.teacher} predicts {meta['classes']}, this update has {ds.classes}; "
                              "pass a teacher trained on every class (old ones first, in order), or leave out "
                              "--teacher to extend the earlier run's")
        return teacher, f"given: {opts.teacher}"
    if prev.teacher is None:
        raise ConfigError(f"{prev.run_dir} keeps no teacher.pt (its teacher was an ONNX or given model); pass "
                          "--teacher CHECKPOINT trained on every class of the update")
    teacher, _ = load_checkpoint(prev.teacher)
    added = len(ds.classes) - len(prev.classes)
    if not added:
        return teacher, f"the earlier run's ({prev.teacher})"
    own = predict_logits(teacher, ds.x_train)  # its own outputs: the teacher keeps its classes by the same term
    extend_head(teacher, len(prev.classes), added, seed=prev.settings.seed)
    label = "teacher"
    observer.say(f"teacher: head extended by {added} classes, fine-tuning {opts.teacher_epochs} epochs")
    observer.on_rung_start(label, opts.teacher_epochs * -(-len(ds.y_train) // prev.settings.batch_size), "extended")
    train(teacher, ds.x_train, ds.y_train, epochs=opts.teacher_epochs, batch_size=prev.settings.batch_size, lr=lr,
          seed=prev.settings.seed, history=History(own, opts.mu, prev.settings.kd_temperature),
          on_step=observer.on_step, on_epoch=lambda e, v: observer.on_epoch(label, e, opts.teacher_epochs, v))
    observer.on_rung_end(label)
    return teacher, (f"the earlier run's ({prev.teacher}), head extended by {added} classes and fine-tuned "
                     f"{opts.teacher_epochs} epochs on this step's images (cross-entropy"
                     f"{f' + {opts.mu:g} x its own earlier outputs' if opts.mu > 0 else ''})")


def _terms(prev: Previous, teacher: nn.Module) -> tuple[list[tuple[str, float]], list[str]]:
    terms = [(n, w) for n, w in parse_kd(prev.settings.kd) if n in UPDATE_TERMS]
    if "features" in needs(terms) and not hasattr(teacher, "stage_channels"):
        terms = [(n, w) for n, w in terms if n not in ("feature", "relation")]
    terms = terms or [("response", 1.0)]
    return terms, [f"{n}:{w:g}" for n, w in terms]


def _distil(opts: UpdateOptions, prev: Previous, ds: Dataset, teacher: nn.Module, student: nn.Module,
            history: torch.Tensor, lr: float, epochs: int, observer: ConsoleObserver) -> tuple[list[float], float,
                                                                                              list[str]]:
    s = prev.settings
    terms, named = _terms(prev, teacher)
    want = needs(terms)
    outputs = TeacherOutputs.build(opts.out / "teacher_cache", [teacher], ds.x_train, views=1,
                                   features="features" in want, embedding="embedding" in want)
    label = f"update {prev.student_name}"
    observer.on_rung_start(label, epochs * -(-len(ds.y_train) // s.batch_size), f"mu {opts.mu:g}")
    t0 = time.perf_counter()
    hist = train(student, ds.x_train, ds.y_train, epochs=epochs, batch_size=s.batch_size, lr=lr, seed=s.seed + 1,
                 teacher=outputs, terms=terms, kd=KDSettings(alpha=s.kd_alpha, temperature=s.kd_temperature),
                 teacher_channels=list(getattr(teacher, "stage_channels", [])),
                 history=History(history, opts.mu, s.kd_temperature), on_step=observer.on_step,
                 on_epoch=lambda e, v: observer.on_epoch(label, e, epochs, v))
    observer.on_rung_end(label)
    return hist.epoch_loss, time.perf_counter() - t0, named + ([f"history:{opts.mu:g}"] if opts.mu > 0 else [])


def run_update(opts: UpdateOptions, observer: ConsoleObserver | None = None) -> Path:
    """Continue the earlier run's student on new data; returns the new run directory."""
    observer = observer or ConsoleObserver(quiet=opts.quiet)
    timer = StageTimer()
    prev = read_previous(opts.previous)
    if (prev.lineage and prev.lineage[-1].data_source.get("task") or "classification") != "classification":
        raise ConfigError(f"{opts.previous} is a {prev.lineage[-1].data_source['task']} run; edgekd update continues "
                          "classification runs only (segmentation updates are not built yet)")
    _prepare_out(opts)
    progress = Progress.check(opts, UPDATE_RECORD)
    target = get_target(opts.target or prev.settings.target)
    formats, _ = resolve_exports(_export_cfg(opts, prev), target)
    observer.say(f"[bold]edgekd update[/] {prev.run_dir} ({prev.student_name}) + {opts.data} -> {opts.out}")
    with timer("data"):  # the new data read and checked before anything is written
        data = _data(opts, prev, observer)
    opts.out.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(opts.out)
    try:
        progress.save()
        with observer:
            return _run(opts, prev, target, formats, observer, timer, data, progress)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: what finished is kept in {opts.out} (the teacher and the distilled student "
                          f"once trained); continue with: {resume_command()}") from None
    finally:
        lock.close()


def _export_cfg(opts: UpdateOptions, prev: Previous):  # the two fields resolve_exports reads
    from ..config import RunConfig

    return RunConfig(export_formats=opts.export_formats or prev.settings.export_formats)


def _teacher_stage(opts: UpdateOptions, prev: Previous, ds: Dataset, observer: ConsoleObserver, lr: float,
                   progress: Progress, meta: dict[str, Any]) -> tuple[Net, str]:
    """This step's teacher: read back from OUT/teacher.pt when an interrupted update made it."""
    done = progress.done("teacher")
    if done and (opts.out / "teacher.pt").is_file():
        observer.say("teacher: kept from the interrupted update (teacher.pt)")
        return load_checkpoint(opts.out / "teacher.pt")[0], done["origin"]
    teacher, origin = _teacher(opts, prev, ds, observer, lr)
    save_checkpoint(opts.out / "teacher.pt", teacher, role="teacher", **meta)
    progress.save("teacher", origin=origin)
    return teacher, origin


def _student_stage(opts: UpdateOptions, prev: Previous, ds: Dataset, teacher: nn.Module, previous: nn.Module,
                   lr: float, epochs: int, observer: ConsoleObserver, progress: Progress,
                   meta: dict[str, Any]) -> tuple[nn.Module, list[float], float, list[str], Path]:
    """The distilled student, saved with what its training reported; read back when an interrupted
    update finished it."""
    ckpt = opts.out / "candidates" / prev.checkpoint.parent.name / "student.pt"
    done = progress.done("student")
    if done and ckpt.is_file():
        observer.say(f"student: kept from the interrupted update ({ckpt.relative_to(opts.out)})")
        return load_checkpoint(ckpt)[0], done["loss"], done["seconds"], done["kd_terms"], ckpt
    student = copy.deepcopy(previous)
    added = len(ds.classes) - len(prev.classes)
    if added:
        extend_head(student, len(prev.classes), added, seed=prev.settings.seed)
    loss, seconds, named = _distil(opts, prev, ds, teacher, student, predict_logits(previous, ds.x_train), lr,
                                   epochs, observer)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, student, role="student", metrics={"update_of": str(prev.checkpoint)}, **meta)
    progress.save("student", loss=loss, seconds=seconds, kd_terms=named)
    return student, loss, seconds, named, ckpt


def _run(opts: UpdateOptions, prev: Previous, target, formats: list[str], observer: ConsoleObserver,
         timer: StageTimer, data: tuple[Dataset, int, list[str], dict], progress: Progress) -> Path:
    s = prev.settings
    lr, epochs = opts.lr or s.lr, opts.epochs or s.student_epochs
    torch.manual_seed(s.seed)
    ds, replayed, notes, source = data
    meta: dict[str, Any] = dict(classes=ds.classes, bands=ds.bands, image_size=ds.image_size, dataset=ds.name,
                                data_source=source)
    with timer("teacher"):
        teacher, origin = _teacher_stage(opts, prev, ds, observer, lr, progress, meta)
        teacher_acc = class_accuracy(predict_logits(teacher, ds.x_val), class_labels(ds.y_val), len(prev.classes))
    previous = prev.load_student()
    before = class_accuracy(_padded(predict_logits(previous, ds.x_val), len(ds.classes)), class_labels(ds.y_val),
                            len(prev.classes))
    with timer("kd_training"):
        student, loss, seconds, named, ckpt = _student_stage(opts, prev, ds, teacher, previous, lr, epochs, observer,
                                                             progress, meta)
    after = class_accuracy(predict_logits(student, ds.x_val), class_labels(ds.y_val), len(prev.classes))
    forgot = (None if before.old_classes is None or after.old_classes is None
              else round(100 * (before.old_classes - after.old_classes), 2))
    observer.say(f"old classes {_pct(before.old_classes)} -> {_pct(after.old_classes)}, new classes "
                 f"{_pct(before.new_classes)} -> {_pct(after.new_classes)}"
                 + (f"; forgetting {forgot:+.2f} points" if forgot is not None else ""))
    arch = ckpt.parent.name
    m, exports = _measure_and_export(opts, prev, ds, student, target, formats, observer, timer)
    budget = s.budget_ms
    report = UpdateReport(
        run_id=uuid.uuid4().hex[:12], created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(["edgekd"] + sys.argv[1:]), resumed=opts.resume, previous_run=str(prev.run_dir),
        previous_student=prev.student_name, previous_classes=prev.classes, classes=ds.classes,
        classes_added=ds.classes[len(prev.classes):], bands=ds.bands, image_size=ds.image_size,
        data={"folder": str(opts.data), "train": int(len(ds.y_train)) - replayed, "val": int(len(ds.y_val))},
        replay_images=replayed, notes=notes, teacher=origin, teacher_accuracy=teacher_acc, kd_terms=named,
        mu=opts.mu, epochs=epochs, lr=lr, train_seconds=round(seconds, 3), train_loss=loss, before=before,
        after=after, forgetting_points=forgot,
        student={"name": prev.student_name, "arch": arch, "checkpoint": ckpt.relative_to(opts.out).as_posix(),
                 "params": count_params(student), "precision": "fp32"},
        measurement=m, budget_ms=budget, meets_budget=None if budget is None else m.latency_ms.p90 <= budget,
        exports=exports, settings=s.model_copy(update={"target": target.name}),
        lineage=[*prev.lineage, Source(data_source=source, classes=ds.classes)],
        stage_seconds={**timer.seconds, "total": timer.total()}, software=software_versions())
    atomic_write(opts.out / UPDATE_RECORD, report.model_dump_json(indent=2))
    atomic_write(opts.out / "update.md", render_update(report))
    observer.say(f"report: {opts.out / 'update.md'} (also {UPDATE_RECORD}; total {timer.total():.1f} s)")
    return opts.out


def _measure_and_export(opts: UpdateOptions, prev: Previous, ds: Dataset, student: nn.Module, target,
                        formats: list[str], observer: ConsoleObserver,
                        timer: StageTimer) -> tuple[Measurement, list[ExportResult]]:
    threads = opts.threads or default_threads()
    cache = None if opts.no_cache else MeasurementCache(default_cache_dir() / "measurements.sqlite")
    measurer = measurer_for(target, ProfileSettings(threads=threads), cache, opts.device_url,
                            opts.device_token_file, device_threads=opts.threads)
    shape = [1, ds.in_channels, ds.image_size, ds.image_size]
    with timer("profiling"):
        m = measurer.measure(to_onnx(student, opts.out / "student.onnx", shape), shape)
    observer.say(f"updated student: p50 {m.latency_ms.p50:.4f} ms, p90 {m.latency_ms.p90:.4f} ms "
                 f"({m.source['latency']}, {m.runtime}, {m.threads} threads, batch 1)")
    mean, std = ds.channel_stats()
    with timer("export"):
        exports = export_formats(student, ds, formats, opts.out / "exports", f"student-{prev.checkpoint.parent.name}",
                                 export_metadata(ds, prev.student_name, opts.out.name, mean, std),
                                 calibration_size=prev.settings.calibration_size, threads=threads,
                                 seed=prev.settings.seed)
    for e in exports:
        observer.say(f"export {e.format}: {e.path} (top-1 agreement {e.parity.top1_agreement:.4f})")
    return m, [e.model_copy(update={"path": relative(e.path, opts.out)}) for e in exports]


def _padded(logits: torch.Tensor, n: int) -> torch.Tensor:
    """The previous student's logits with the classes it lacks at -inf (it never predicts them)."""
    pad = torch.full((len(logits), n - logits.shape[1]), float("-inf"))
    return torch.cat([logits, pad], 1)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def render_update(r: UpdateReport) -> str:
    """update.md: what the update did, what it forgot, how fast the result is."""
    m = r.measurement
    rows = [("before (previous student)", r.before), ("after (updated student)", r.after),
            ("teacher of this step", r.teacher_accuracy)]
    lines = [f"# edgekd update — {r.previous_student}", "",
             f"Continued `{r.previous_run}` on `{r.data['folder']}` ({r.data['train']} new training images + "
             f"{r.replay_images} replayed from earlier steps). Classes added: {', '.join(r.classes_added) or 'none'}.",
             "", f"Loss: {' + '.join(r.kd_terms)} (mu = {r.mu:g}{', plain fine-tuning' if r.mu == 0 else ''}), "
             f"{r.epochs} epochs at lr {r.lr:g}, {r.train_seconds:.1f} s. Teacher: {r.teacher}.", "",
             "| model | old classes | new classes | all | images (old / new) |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {_pct(a.old_classes)} | {_pct(a.new_classes)} | {_pct(a.all)} | {a.n_old} / {a.n_new} |"
              for name, a in rows]
    lines += ["", "Forgetting (old-class accuracy lost): "
              + ("–" if r.forgetting_points is None else f"{r.forgetting_points:+.2f} points"), "",
              f"Latency of the updated student: p50 {m.latency_ms.p50:.4f} ms, p90 {m.latency_ms.p90:.4f} ms "
              f"({m.source['latency']}; {m.runtime}, {m.threads} threads, batch {m.batch}, {m.latency_ms.n} runs)"
              + ("" if r.budget_ms is None else f"; budget {r.budget_ms:g} ms: "
                 f"{'met' if r.meets_budget else 'NOT met'}") + ".", "", "| export | precision | top-1 agreement | "
              "max abs diff |", "|---|---|---|---|"]
    lines += [f"| {e.path} | {e.precision} | {e.parity.top1_agreement:.4f} | {e.parity.max_abs_diff:.2e} |"
              for e in r.exports]
    lines += [""] + [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def read_update(run_dir: Path) -> UpdateReport:
    return UpdateReport.model_validate(json.loads((run_dir / UPDATE_RECORD).read_text()))
