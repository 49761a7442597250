"""The stages of `edgekd optimize` (DESIGN.md section 2), each a function of the plan and the
records before it, returning a record: the teacher, the search, the selection, the exports."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.table import Table
from torch import nn

from ..config import RunConfig
from ..console import ConsoleObserver
from ..convert.onnx import to_onnx
from ..distill.teacher import LiveTeacher, TeacherOutputs, cache_bytes
from ..distill.trainer import Unlabeled, predict_logits, steps, train
from ..errors import ConfigError
from ..export import FORMATS, ExportResult
from ..export.base import DETECTOR_GRAPH_FORMATS, detects_itself
from ..export.device import check_on_device
from ..export.run import export_formats, export_metadata
from ..files import atomic_write
from ..host import usable_cpus
from ..measurers import AgentMeasurer
from ..measurers.pool import BoardPool
from ..models.arch import torchvision_students
from ..models.detnet import boxes_only
from ..models.external import ExternalNet
from ..models.family import EdgeNet
from ..models.io import load_checkpoint, save_checkpoint
from ..models.sources import OnnxTeacher, build_student
from ..models.stats import count_macs, count_params
from ..models.taps import tapped_channels
from ..models.tvdet import TorchvisionDetector
from ..models.tvdet import export_onnx as export_detector
from ..profilers.measurement import Measurement
from ..search.candidates import QAT, Candidate, CutSummary, RungResult, TrialRecord, TrialStatus, costs_of
from ..search.engine import Search, SearchSettings, finalize_checkpoint
from ..search.objective import Costs, Objective, Scored, select
from ..search.pareto import pareto_front
from ..search.precision import PrecisionChoice, choose_precisions
from ..search.students import KDTrainer
from ..search.workers import RayWorkers
from ..tasks import get_task, task_of
from .plan import RunPlan, StageTimer, lock_run_dir


@dataclass
class TeacherResult:
    """The teacher of the run: the model, where it came from, how well it does, its outputs
    cached for every candidate, and its measurement on the target (the reference of C_hw)."""

    model: nn.Module  # EdgeNet, ExternalNet or OnnxTeacher
    origin: str
    train_loss: list[float]
    accuracy: float
    cross_entropy: float
    outputs: TeacherOutputs | LiveTeacher
    unlabeled: Unlabeled | None
    val_logits: torch.Tensor
    measurement: Measurement

    def costs(self, delta: float) -> Costs:
        """The teacher's figures as J's reference (energy only as costs_of lets it in)."""
        return costs_of(self.measurement, delta)


@dataclass
class SearchResult:
    trials: list[TrialRecord]
    rung_epochs: list[int]
    objective: Objective
    trainer: KDTrainer
    training_workers: int = 1


@dataclass
class Selection:
    """The candidates (every trial that trained), the one selected and why, and the Pareto front."""

    candidates: list[Candidate]
    selected: str
    reason: str
    pareto_front: list[str]
    precisions: list[PrecisionChoice] = field(default_factory=list)  # per student: lower precisions kept or dropped

    @property
    def best(self) -> Candidate:
        return next(c for c in self.candidates if c.name == self.selected)


# what a run writes; --overwrite removes these (and only these: other files in the folder stay)
RUN_ENTRIES = ("config.yaml", "teacher.pt", "teacher.onnx", "teacher_measurement.json", "teacher_training.json",
               "stage_seconds.json", "teacher_cache", "search.json",
               "optuna.db", "candidates", "baseline", "exports", "report.json", "report.md", "report.html")


def clear_run_dir(run_dir: Path) -> None:
    for name in RUN_ENTRIES:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def start_run_dir(plan: RunPlan, observer: ConsoleObserver) -> None:
    """The first write of a run: the folder, its lock (held until the process ends: a second
    optimize on the same folder is refused, not mixed in) and its resolved configuration."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.lock = lock_run_dir(plan.run_dir)
    if not plan.resume:
        clear_run_dir(plan.run_dir)  # --overwrite starts clean: no earlier student, rung or figure is reused
    if not plan.resume:
        atomic_write(plan.run_dir / "config.yaml",
                     yaml.safe_dump(plan.cfg.model_dump(mode="json", by_alias=True), sort_keys=False))
    ds = plan.ds
    budget = (f"budget {plan.budget_ms:g} ms" if plan.cfg.budget_ms is not None
              else f"budget: the teacher's p50 / {plan.cfg.speedup:g}")
    observer.say(f"[bold]edgekd optimize[/] target [cyan]{plan.target.name}[/] {budget} -> "
                 f"{plan.run_dir}" + (" (resumed)" if plan.resume else ""))
    observer.say(f"data: {ds.name} ({'synthetic' if ds.synthetic else 'image folder'}), {len(ds.classes)} classes, "
                 f"{len(ds.y_train)} train / {len(ds.y_val)} val, {ds.in_channels}x{ds.image_size}x{ds.image_size}"
                 + (f", {len(ds.skipped_files)} unreadable files skipped" if ds.skipped_files else ""))
    if ds.task == "detection" and ds.band_note:  # boxes clipped or dropped, and in which files
        observer.say(f"labels: {ds.band_note}", style="yellow" if "dropped" in ds.band_note else None)
    if plan.subsampled:
        observer.say(f"data subsampled: {plan.subsampled}", style="yellow")
    observer.say(f"threads: training {plan.train_threads}, inference {plan.threads} ({usable_cpus()} usable CPUs; "
                 "--train-threads / --threads)")


def _train_teacher(plan: RunPlan, observer: ConsoleObserver, teacher: nn.Module, label: str) -> list[float]:
    """Cross-entropy training of the teacher on the data set (from scratch, or fine-tuning)."""
    cfg, ds = plan.cfg, plan.teacher_view
    observer.say(f"{label} ({cfg.teacher_epochs} epochs)")
    observer.on_rung_start("teacher", steps(len(ds.y_train), cfg.batch_size, cfg.teacher_epochs), label)
    hist = train(teacher, ds.x_train, ds.y_train, epochs=cfg.teacher_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                 seed=cfg.seed, augmentations=tuple(cfg.augmentations), on_step=observer.on_step,
                 on_epoch=lambda e, loss: observer.on_epoch("teacher", e, cfg.teacher_epochs, loss), task=task_of(ds))
    observer.on_rung_end("teacher")
    return hist.epoch_loss


def _teacher_model(plan: RunPlan, observer: ConsoleObserver) -> tuple[nn.Module, str, list[float]]:
    """(the teacher, where it came from, its training loss per epoch): given and used as it is,
    given and fine-tuned because its classifier is new for this data set, or trained here."""
    given = plan.teachers.main
    if given is None:
        view = plan.teacher_view
        mean, std = view.channel_stats()
        teacher: nn.Module = build_student(plan.cfg.teacher_arch, view.in_channels, len(view.classes), mean, std,
                                           task=view.task, det_head=plan.cfg.det_head)[0]
        return teacher, "trained by this run", _train_teacher(plan, observer, teacher,
                                                              f"training teacher {plan.cfg.teacher_arch.name}")
    if not given.needs_training:
        return given.model, given.origin, []
    loss = _train_teacher(plan, observer, given.model, f"fine-tuning teacher {given.name} on the data set")
    return given.model, f"fine-tuned from {given.origin} on this data set ({plan.cfg.teacher_epochs} epochs)", loss


def teacher_stage(plan: RunPlan, observer: ConsoleObserver, timer: StageTimer) -> TeacherResult:
    """Load, fine-tune or train the teacher, cache its outputs once (memory-mapped), measure it on the target."""
    cfg, ds, run_dir = plan.cfg, plan.teacher_view, plan.run_dir  # the teacher's bands under cross-modal KD
    with timer("teacher"):
        teacher, origin, loss = _teacher_model(plan, observer)
        record = run_dir / "teacher_training.json"  # the curve and origin, for a resumed run's report
        if isinstance(teacher, (EdgeNet, ExternalNet)) and (not (run_dir / "teacher.pt").exists() or not plan.resume):
            save_checkpoint(run_dir / "teacher.pt", teacher, role="teacher",
                            **{**plan.checkpoint_meta, "bands": ds.bands})  # its own bands under cross-modal KD
            atomic_write(record, json.dumps({"origin": origin, "train_loss": loss}))
        elif plan.resume and record.exists():
            earlier = json.loads(record.read_text())
            origin, loss = f"{earlier['origin']} (resumed from the run directory)", earlier["train_loss"]
    with timer("teacher_outputs"):  # computed once, memory-mapped, shared by every candidate and rung
        outputs = teacher_outputs(plan, [teacher, *plan.teachers.extra], observer)
        unlabeled = None
        if plan.unlabeled_x is not None:
            unlabeled = Unlabeled(plan.unlabeled_x, TeacherOutputs.build(
                run_dir / "teacher_cache", [teacher], plan.unlabeled_x, views=cfg.teacher_views))
        t_val = predict_logits(teacher, ds.x_val)
    task = task_of(ds)
    ev = task.evaluate(t_val, ds.y_val)
    observer.say(f"teacher {model_name(teacher)} ({origin}): val {task.metric} {ev['accuracy']:.3f}")
    m = plan.measurer
    observer.say(f"measurements: {m.describe}" + (
        f" (batch 1, >= {cfg.profile_min_runs} runs and >= {cfg.profile_min_seconds:g} s each)"
        if m.mode != "predicted" else ""), style="bold yellow" if m.mode == "predicted" else None)
    with timer("profiling"):
        measurement = _teacher_measurement(plan, teacher)
    return TeacherResult(teacher, origin, loss, ev["accuracy"], ev["cross_entropy"], outputs, unlabeled, t_val,
                         measurement)


def teacher_outputs(plan: RunPlan, teachers: list[nn.Module], observer: ConsoleObserver
                    ) -> TeacherOutputs | LiveTeacher:
    """The teachers' outputs on the training images, cached once on disk -- or, when the cache
    would pass --teacher-cache-max-gb (dense logits of a large data set), the teachers run live."""
    cfg, ds = plan.cfg, plan.teacher_view
    features, embedding, edges = "features" in plan.needs, "embedding" in plan.needs, "edges" in plan.needs
    need = cache_bytes(teachers[0], ds.x_train, cfg.teacher_views, edges) * len(teachers)
    if need > cfg.teacher_cache_max_gb * 2**30:
        observer.say(f"teacher outputs: the cache would take {need / 2**30:.1f} GB (> teacher_cache_max_gb "
                     f"{cfg.teacher_cache_max_gb:g}); the teacher runs live on every batch instead (slower training)",
                     style="yellow")
        return LiveTeacher(teachers, views=cfg.teacher_views, features=features or embedding,
                           modules=plan.teacher_modules, edges=edges)
    out = TeacherOutputs.build(plan.run_dir / "teacher_cache", teachers, ds.x_train, views=cfg.teacher_views,
                               features=features, embedding=embedding, modules=plan.teacher_modules, edges=edges)
    if ds.task == "segmentation":
        observer.say(f"teacher outputs: {need / 2**20:.1f} MB of dense logits cached (float16, at the teacher's output "
                     f"stride) for {len(ds.x_train)} tiles x {cfg.teacher_views} view(s)")
    elif ds.task == "detection" and boxes_only(teachers[0]):
        observer.say(f"teacher outputs: the teacher gives boxes only (decoding and NMS inside its graph): its "
                     f"detections on {len(ds.x_train)} images cached as detector rows ({need / 2**20:.1f} MB, "
                     "float16); it teaches by pseudo-boxes alone (--kd pseudo-box)")
    elif ds.task == "detection":  # what the head and pseudo-box terms read: the teacher's rows, decoded when needed
        sides = " and the GFL head's box-side distributions (for ld)" if edges else ""
        observer.say(f"teacher outputs: {need / 2**20:.1f} MB of detector rows{sides} cached (float16: class logits, "
                     f"box sides and centre-ness at strides 8/16/32) for {len(ds.x_train)} images; the head and "
                     "pseudo-box terms read them (pseudo-boxes decoded per batch)")
    return out


def model_name(model: nn.Module) -> str:
    """EdgeNet's architecture name, `timm:NAME` and the like, or the class name."""
    return str(getattr(model, "name", type(model).__name__))


def _teacher_measurement(plan: RunPlan, teacher: nn.Module) -> Measurement:
    path = plan.run_dir / "teacher_measurement.json"
    if plan.resume and path.exists():
        return Measurement.model_validate_json(path.read_text())
    onnx_path = plan.run_dir / "teacher.onnx"
    if isinstance(teacher, OnnxTeacher):  # an ONNX teacher is measured as given
        shutil.copyfile(teacher.path, onnx_path)
    elif isinstance(det := getattr(teacher, "inner", None), TorchvisionDetector):  # as deployed: boxes, scores, labels
        export_detector(det, onnx_path, plan.teacher_input_shape)
    else:
        to_onnx(teacher, onnx_path, plan.teacher_input_shape)
    m = plan.measurer.measure(onnx_path, plan.teacher_input_shape)
    atomic_write(path, m.model_dump_json())
    return m


def teacher_channels(plan: RunPlan, teacher: nn.Module) -> list[int]:
    """Channels of the teacher's feature maps: its stages, or the modules feature_pairs names."""
    if "features" not in plan.needs:
        return []  # no feature term: nothing reads them (a TorchScript teacher has none to give)
    if plan.teacher_modules:
        return tapped_channels(teacher, plan.teacher_modules, plan.teacher_view.in_channels, plan.ds.image_size)
    return list(getattr(teacher, "stage_channels", []))


def search_stage(plan: RunPlan, teacher: TeacherResult, observer: ConsoleObserver, timer: StageTimer) -> SearchResult:
    """Proposals, screening and KD training by successive halving (edgekd.search.engine)."""
    cfg, ds = plan.cfg, plan.ds
    mean, std = ds.channel_stats()
    named = cfg.feature_modules
    trainer = KDTrainer(ds=ds, mean=mean, std=std, teacher=teacher.outputs,
                        teacher_channels=teacher_channels(plan, teacher.model),
                        t_val=teacher.val_logits, terms=plan.terms,
                        kd=plan.kd, batch_size=cfg.batch_size, lr=cfg.lr,
                        feature_pairs=cfg.stage_pairs,
                        student_modules=named[0] if named else None, teacher_modules=named[1] if named else None,
                        unlabeled=teacher.unlabeled,
                        calibration_size=cfg.calibration_size, seed=cfg.seed, threads=plan.threads,
                        symmetric_int8=plan.measurer.runtime == "tensorrt", weights_dir=cfg.student_weights_dir,
                        qat_epochs=cfg.qat_epochs,
                        cut_from=teacher.model if "from-teacher" in cfg.students else None, det_head=cfg.det_head)
    tv = torchvision_students(cfg.students)
    if tv and ds.task == "detection" and any(name != "pseudo-box" for name, _ in plan.terms):
        observer.say(f"{', '.join(s.name for s in tv)}: distilled by pseudo-boxes (torchvision's own losses on the "
                     "labels plus the teacher's sure detections); the other --kd terms read edgekd's heads")
    objective = plan.objective(teacher.costs(cfg.delta))
    workers = ray_workers(cfg, plan.train_threads, observer)
    search = Search(SearchSettings.from_config(cfg, plan.deadline), objective, trainer, plan.measurer, plan.run_dir,
                    plan.input_shape, plan.checkpoint_meta, observer, on_time=timer.add, workers=workers)
    try:
        trials = search.run()
    finally:
        if workers is not None:
            workers.shutdown()
    return SearchResult(trials, search.epochs, objective, trainer,
                        (max(workers.workers, workers.data_parallel) if workers else 1))


def ray_workers(cfg: RunConfig, threads: int, observer: ConsoleObserver) -> RayWorkers | None:
    """The Ray tasks the rungs are trained by (--workers > 1 or --ray-address), else None: in this process."""
    if cfg.workers <= 1 and cfg.data_parallel <= 1 and not cfg.ray_address:
        return None
    w = RayWorkers(cfg.workers, cfg.ray_address, cpus_per_task=1 if cfg.workers > 1 or cfg.data_parallel > 1
                   else threads, data_parallel=cfg.data_parallel, quiet=cfg.quiet).start()
    observer.say(f"training: {w.describe()}")
    return w


def _counted(run_dir: Path, t: TrialRecord, bare: Callable[[Any], nn.Module]) -> tuple[nn.Module, CutSummary | None]:
    """The structure a trial's sizes are counted on: the bare one, or for a student cut from the
    teacher (whose blocks and channels the ranking on real images chose) its own checkpoint, and
    the summary of its cut."""
    path = run_dir / "candidates" / t.arch.name / f"rung{t.last.rung}.pt" if t.last else None
    if getattr(t.arch, "family", None) != "from-teacher" or path is None or not path.is_file():
        return bare(t.arch), None
    m, _ = load_checkpoint(path)
    return m, CutSummary.of(m)


def select_student(plan: RunPlan, trials: list[TrialRecord], bare: Callable[[Any], nn.Module]) -> Selection:
    """Candidates are the trials that completed a rung, scored by their last rung; argmin J
    among those that fit memory and meet the budget (see search.objective.select). `bare` builds
    a student's structure (for counting)."""
    candidates = []
    for t in trials:
        if t.last is not None and t.status != TrialStatus.DUPLICATE:
            m, cut = _counted(plan.run_dir, t, bare)
            candidates.append(Candidate.from_trial(t, count_params(m), count_macs(m, tuple(plan.input_shape)), cut))
    last_rung = {c.arch.name: (c.arch, c.rung) for c in sorted(candidates, key=lambda c: c.rung)}
    for arch, rung in last_rung.values():  # candidates/NAME/student.pt: every candidate is exportable
        finalize_checkpoint(plan.run_dir, arch, rung)
    precisions = choose_precisions(candidates, _fp32_results(plan.run_dir, candidates),
                                   get_task(plan.ds.task).metric)
    if not candidates:
        raise ConfigError("no candidate was trained: every proposal was screened out or the time budget ran out; "
                          "raise --budget-ms, add smaller candidates, or give --max-minutes more time")
    selectable = [c for c in candidates if c.status != TrialStatus.SLOWER_THAN_FP32]
    if not selectable:
        raise ConfigError("every candidate was measured no faster than the FP32 version of the same student "
                          f"({'; '.join(p.reason for p in precisions)}); search fp32 too: --precisions fp32,"
                          + ",".join(sorted({c.precision for c in candidates})))
    try:
        selected, reason = select([Scored(c.name, c.objective, c.meets_budget, c.measurement.latency_ms.p90,
                                          c.fits_memory) for c in selectable], plan.budget_ms)
    except ValueError:
        raise ConfigError(f"no candidate fits the memory budget of {plan.target.name} "
                          f"({plan.target.memory_budget_mb:g} MB); add smaller candidates or raise memory_budget_mb "
                          "in a target file") from None
    front = [candidates[i].name for i in pareto_front(
        [(-c.val_accuracy, c.measurement.latency_ms.p90, c.measurement.energy_mj or 0.0) for c in candidates])]
    dropped = [c.name for c in candidates if c.status == TrialStatus.SLOWER_THAN_FP32]
    if dropped:
        reason += f"; not selectable, measured no faster than their FP32 version: {', '.join(dropped)}"
    return Selection(candidates, selected, reason + contended_budget_note(candidates, selected), front, precisions)


def _fp32_results(run_dir: Path, candidates: list[Candidate]) -> dict[tuple[str, int], RungResult]:
    """The FP32 figures of every student with a lower-precision candidate, at that candidate's
    rung (the search measures the FP32 version beside every lower precision)."""
    out = {}
    for c in candidates:
        f = run_dir / "candidates" / c.arch.name / f"rung{c.rung}-fp32.json"
        if c.precision != "fp32" and f.exists():
            out[(c.arch.name, c.rung)] = RungResult.model_validate_json(f.read_text())
    return out


def contended_budget_note(candidates: list[Candidate], selected: str) -> str:
    """What the selection reason must add when a budget decision rests on a contended figure:
    the selected student's, or that of one rejected as over budget."""
    shaky = [c for c in candidates if c.measurement.contended and (c.name == selected or not c.meets_budget)]
    if not shaky:
        return ""
    said = ", ".join(f"{c.name} (p90 {c.measurement.latency_ms.p90:.3f} ms, "
                     f"{'within' if c.meets_budget else 'over'} budget)" for c in shaky)
    return (f"; CONTENDED: the budget decision for {said} rests on figures measured while the host was busy "
            "-- measure again on a quiet machine before relying on it")


def export_stage(plan: RunPlan, choice: Selection, observer: ConsoleObserver, timer: StageTimer) -> list[ExportResult]:
    """The selected student in every requested format, each checked against PyTorch; paths in
    the results are relative to the run directory."""
    cfg, best = plan.cfg, choice.best
    student, formats = _export_model_and_formats(plan, best, observer)
    mean, std = plan.ds.channel_stats()
    with timer("export"):
        exports = export_formats(student, plan.ds, formats, plan.run_dir / "exports", f"student-{best.arch.name}",
                                 export_metadata(plan.ds, choice.selected, plan.run_id, mean, std,
                                                 getattr(student, "output_stride", None)),
                                 calibration_size=cfg.calibration_size, max_accuracy_drop=cfg.max_accuracy_drop,
                                 tolerances=cfg.parity, threads=plan.threads, seed=cfg.seed)
    device = plan.measurer.parity_board() if isinstance(plan.measurer, BoardPool) else plan.measurer
    if isinstance(device, AgentMeasurer) and detects_itself(student):
        observer.say(f"{best.name}: its graph holds its own NMS (outputs boxes, scores, labels); the device parity "
                     "check compares dense outputs, so it was checked on this machine only", style="yellow")
    elif isinstance(device, AgentMeasurer):  # parity where the model runs, too
        with timer("device_parity"):
            task = task_of(plan.ds)
            exports = check_on_device(device, student, exports, plan.ds.x_val, plan.ds.y_val,
                                      task.tolerances(cfg.parity), task.compare)
    for e in exports:
        observer.say(f"export {e.format}: {e.path} ({e.parity.agreement_name} {e.parity.top1_agreement:.4f}, "
                     + (f"mIoU {e.parity.accuracy_export:.4f} vs {e.parity.accuracy_torch:.4f}, "
                        if e.parity.metric == "mIoU" else "") + f"max |diff| {e.parity.max_abs_diff:.2e})"
                     + (f"; {e.device_parity.summary()}" if e.device_parity is not None else ""))
    if plan.export_note:
        observer.say(plan.export_note, style="yellow")
    return [e.model_copy(update={"path": relative(e.path, plan.run_dir)}) for e in exports]


def _export_model_and_formats(plan: RunPlan, best: Candidate, observer: ConsoleObserver) -> tuple[nn.Module, list[str]]:
    """The model the exports are built from and checked against, and the formats: for an INT8
    student its INT8 export is added; a quantization-aware student is its fake-quantized model,
    exported to the QAT formats in place of the float ones requested."""
    student, _ = load_checkpoint(finalize_checkpoint(plan.run_dir, best.arch, best.rung))
    formats = list(plan.export_formats)
    if detects_itself(student):  # torchvision's detector: its own graph, decoding and NMS inside, at FP32
        left = [f for f in formats if f not in DETECTOR_GRAPH_FORMATS]
        formats = [f for f in formats if f in DETECTOR_GRAPH_FORMATS] or ["onnx"]
        if left:
            observer.say(f"the selected student {best.name} ships as its own FP32 graph with decoding and NMS inside "
                         f"({', '.join(formats)}); {', '.join(left)} not built for it", style="yellow")
    if best.precision == "int8" and not any(FORMATS[f].precision == "int8" for f in formats if f in FORMATS):
        formats.append("onnx-int8")  # the selected student is its INT8 version: ship that
    if best.precision != QAT:
        return student, formats
    from ..convert.qat import load_qat

    qat = load_qat(plan.run_dir / best.checkpoint, student, plan.input_shape)
    wanted = ["onnx-int8-qat"] + (["openvino-int8-qat"] if any(FORMATS[f].runtime == "openvino" for f in formats
                                                                  if f in FORMATS) else [])
    left = [f for f in formats if f in FORMATS and FORMATS[f].runtime not in ("onnxruntime", "openvino")]
    if left:
        observer.say(f"the selected student is quantization-aware (int8-qat): exported as {', '.join(wanted)}; "
                     f"{', '.join(left)} not built (export the float student with edgekd export for those)",
                     style="yellow")
    return qat, wanted


def relative(path: str | Path, run_dir: Path) -> str:
    """`path` relative to the run directory, in POSIX form."""
    return Path(os.path.relpath(Path(path).resolve(), run_dir.resolve())).as_posix()


COLUMNS = ("name", "params", "MMACs", "val acc", "KD loss", "p50 ms", "p90 ms", "peak MB", "mJ", "C_hw", "P_rt", "J")
NARROW = ("name", "val acc", "p90 ms", "P_rt", "J")  # what decides the pick, for consoles under 110 columns


def candidates_table(choice: Selection, teacher: Measurement, width: int = 200, metric: str = "accuracy") -> Table:
    """The candidates as a rich table, best J first; the teacher is the reference row. On a
    narrow console only the columns that decide the pick are shown (report.md has them all). The
    validation column is headed by the task's metric (val acc, val mIoU, val mAP50)."""
    how = teacher.source["latency"]
    cond = f"{teacher.runtime}, batch {teacher.batch}" + (f", {teacher.threads} threads" if how != "predicted" else "")
    t = Table(title=f"candidates: latency {how.upper() if how == 'predicted' else how} ({cond}), "
                    f"energy {teacher.source.get('energy', 'not measured')}")
    keep = [i for i, col in enumerate(COLUMNS) if width >= 110 or col in NARROW]
    heading = "val acc" if metric == "accuracy" else f"val {metric}"
    for i in keep:
        t.add_column(heading if COLUMNS[i] == "val acc" else COLUMNS[i], justify="left" if i == 0 else "right")
    rows = [("(teacher)", "", "", "", "", f"{teacher.latency_ms.p50:.3f}", _p90(teacher),
             _fmt(teacher.peak_memory_mb), _fmt(teacher.energy_mj, 3), "1 (ref)", "", "")]
    for c in sorted(choice.candidates, key=lambda c: c.objective):
        m = c.measurement
        rows.append((c.name, f"{c.params:,}", f"{c.macs / 1e6:.2f}", f"{c.val_accuracy:.3f}", f"{c.val_kd_loss:.3f}",
                     f"{m.latency_ms.p50:.3f}", _p90(m), _fmt(m.peak_memory_mb),
                     _fmt(m.energy_mj, 3), f"{c.c_hw:.3f}", f"{c.penalty:g}", f"{c.objective:.3f}"))
    for n, row in enumerate(rows):
        style = "dim" if n == 0 else "bold green" if row[0] == choice.selected else None
        t.add_row(*(row[i] for i in keep), style=style)
    if any(m.contended for m in [teacher, *(c.measurement for c in choice.candidates)]):
        t.caption = "* measured while the host was contended (see report.html, 'Where and how busy')"
    return t


def _p90(m: Measurement) -> str:
    return f"{m.latency_ms.p90:.3f}" + ("*" if m.contended else "")


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
