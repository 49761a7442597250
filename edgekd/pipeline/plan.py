"""Resolving a run: everything a user can get wrong (target, budget, KD terms and their inputs,
data, teachers, run directory, where models are measured) is checked here, before anything is
written. The result is a `RunPlan` that every stage reads."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from ..config import RunConfig
from ..data import Dataset, data_source, load_dataset
from ..data.dataset import band_view
from ..distill.losses import KDSettings, parse_kd
from ..distill.losses import needs as kd_needs
from ..errors import CheckpointError, ConfigError, DataError, EdgeKDError, RunDirError
from ..files import atomic_write
from ..host import default_threads, default_train_threads
from ..measurers import LocalMeasurer, Measurer, measurer_for
from ..models.arch import (
    TORCHVISION_DET_STUDENTS,
    ArchSpec,
    ExternalSpec,
    TimmSpec,
    parse_students,
    torchvision_students,
)
from ..models.sources import LoadedModel, SourceRequest, load_model
from ..profilers import MeasurementCache, ProfileSettings
from ..profilers.base import Reference
from ..profilers.cache import default_cache_dir
from ..registry import close_matches
from ..search.objective import Costs, CostWeights, Objective
from ..targets import Target, get_target
from ..tasks import get_task, resolve_task


class StageTimer:
    """Seconds per stage, summed over every time a stage runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()
        self.earlier_s = 0.0  # wall time of the runs this one resumes
        self.path: Path | None = None

    def record_to(self, path: Path, resume: bool) -> None:
        """Keep the seconds in `path` as they pass; a resumed run adds to what the stopped run spent."""
        if resume and path.exists():
            try:
                earlier = json.loads(path.read_text())
                for name, sec in earlier["seconds"].items():
                    self.add(name, float(sec))
                self.earlier_s = float(earlier["elapsed"])
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # a damaged record: this run's own times only
        self.path = path
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            atomic_write(self.path, json.dumps({"seconds": self.seconds, "elapsed": self.total()}))

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)
        self._save()

    def total(self) -> float:
        return round(self.earlier_s + time.perf_counter() - self.start, 3)


@dataclass
class Teachers:
    """The teachers a run was given (checked against the data set), or none: then one is trained."""

    main: LoadedModel | None
    extra: list[nn.Module]


@dataclass
class RunPlan:
    """A run, resolved and checked; nothing of it has been written yet."""

    cfg: RunConfig
    resume: bool
    target: Target
    budget_ms: float
    budget_source: str
    terms: list[tuple[str, float]]
    needs: frozenset[str]
    run_dir: Path
    measurer: Measurer
    threads: int  # inference threads for measurements here
    ds: Dataset
    unlabeled_x: torch.Tensor | None
    teachers: Teachers
    kd: KDSettings
    export_formats: list[str] = field(default_factory=lambda: ["onnx"])
    export_note: str | None = None  # e.g. how to build the TensorRT engine on the board
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    lock: IO[str] | None = None  # the run directory's lock, held while the run lives
    deadline: float | None = None
    train_threads: int = 1  # PyTorch threads for training
    teacher_ds: Dataset | None = None  # cross-modal KD: the teacher's bands of the same images and split

    @property
    def teacher_view(self) -> Dataset:
        """The data as the teacher sees it (its own bands under cross-modal KD)."""
        return self.teacher_ds if self.teacher_ds is not None else self.ds

    @property
    def teacher_input_shape(self) -> list[int]:
        t = self.teacher_view
        return [1, t.in_channels, t.image_size, t.image_size]

    @property
    def subsampled(self) -> str | None:
        """How the configuration cut a user's image folder down (the smoke preset does), or None."""
        c = self.cfg
        if self.ds.synthetic or c.max_samples_per_class is None:
            return None
        return (f"at most {c.max_samples_per_class} images per class of {c.data}, at {self.ds.image_size} px "
                f"(max_samples_per_class{'; the ' + c.preset + ' preset sets it' if c.preset != 'default' else ''}); "
                "leave it out (and --preset smoke) to use every image")

    @property
    def teacher_modules(self) -> list[str] | None:
        """The teacher's modules that feature_pairs names, or None."""
        named = self.cfg.feature_modules
        return named[1] if named else None

    @property
    def input_shape(self) -> list[int]:
        return [1, self.ds.in_channels, self.ds.image_size, self.ds.image_size]

    @property
    def checkpoint_meta(self) -> dict[str, Any]:
        c = self.cfg
        return dict(classes=self.ds.classes, bands=self.ds.bands, image_size=self.ds.image_size, dataset=self.ds.name,
                    data_source=data_source(c.data, seed=c.seed, val_fraction=c.val_fraction, image_size=c.image_size,
                                            samples_per_class=c.samples_per_class,
                                            max_samples_per_class=c.max_samples_per_class, bands=c.bands,
                                            split_file=c.split_file, task=c.task, mask_palette=c.mask_palette,
                                            tile=c.tile, tile_overlap=c.tile_overlap))

    def bind_budget(self, teacher_p50_ms: float) -> RunPlan:
        """The plan with its budget decided: --budget-ms when given, else the teacher's p50 on the
        target / --speedup, or the target's own budget when that is tighter. The teacher's p50,
        not its p90: a busy host inflates the tail of one measurement (a p90 seven times the p50
        has been seen) and the budget would follow the noise."""
        c, t = self.cfg, self.target
        if c.budget_ms is not None:
            return self
        relative = teacher_p50_ms / c.speedup
        if relative >= t.default_budget_ms:
            return replace(self, budget_ms=t.default_budget_ms,
                           budget_source=f"target {t.name}'s budget (tighter than the teacher's p50 "
                                         f"{teacher_p50_ms:.3f} ms / --speedup {c.speedup:g})")
        return replace(self, budget_ms=round(relative, 6),
                       budget_source=f"the teacher's p50 {teacher_p50_ms:.3f} ms / --speedup {c.speedup:g} "
                                     f"(target {t.name}'s own budget, {t.default_budget_ms:g} ms, would not bind)")

    def with_reference(self, teacher_onnx: Path) -> RunPlan:
        """The plan whose local measurer times the teacher beside each candidate (interleaved), so
        that C_hw's latency ratio is taken in one window; a remote or predicted one is unchanged."""
        if not self.cfg.interleave or not isinstance(self.measurer, LocalMeasurer) or not teacher_onnx.exists():
            return self
        return replace(self, measurer=self.measurer.beside(Reference(teacher_onnx, self.teacher_input_shape)))

    def objective(self, reference: Costs) -> Objective:
        c = self.cfg
        return Objective(lam=c.lambda_, gamma=c.gamma, delta=c.delta,
                         weights=CostWeights(c.w_latency, c.w_memory, c.w_energy), budget_ms=self.budget_ms,
                         reference=reference, memory_budget_mb=self.target.memory_budget_mb)


def resolve_run(cfg: RunConfig, resume: bool, timer: StageTimer) -> RunPlan:
    """Check every input and decide every setting; raises an EdgeKDError naming the fix."""
    target = get_target(cfg.target)
    cfg = cfg.model_copy(update={"task": resolve_task(cfg.task, cfg.data)})  # config.yaml keeps the resolved task
    kd_given = "kd" in cfg.model_fields_set
    if not kd_given:  # the task's default terms (written to config.yaml: a resume keeps them)
        cfg = cfg.model_copy(update={"kd": list(get_task(cfg.task).default_kd)})
    terms = parse_kd(cfg.kd)
    check_terms(terms, cfg.task)
    check_pairings(cfg, terms)
    want = kd_needs(terms)
    if "teachers" in want and not cfg.teachers:
        raise ConfigError("--kd multi-teacher needs more teachers: add --teacher-extra PATH (one or more)")
    if "unlabeled" in want and cfg.unlabeled is None:
        raise ConfigError("--kd semi-supervised needs unlabelled images: pass --unlabeled DIR")
    check_students(cfg.students, cfg.task)
    check_detection(cfg, terms)
    check_search_inputs(cfg)
    formats, export_note = resolve_exports(cfg, target)
    if cfg.student_weights_dir is not None and not cfg.student_weights_dir.is_dir():
        raise ConfigError(f"--student-weights-dir {cfg.student_weights_dir} is not a folder; pass the folder that "
                          "holds NAME.safetensors / NAME.pth files of the timm students")
    run_dir = cfg.out if resume and cfg.out is not None else prepare_run_dir(cfg, target)
    with timer("data"):
        ds = load_dataset(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction, image_size=cfg.image_size,
                          samples_per_class=cfg.samples_per_class, max_samples_per_class=cfg.max_samples_per_class,
                          bands=cfg.bands, split_file=cfg.split_file, task=cfg.task, mask_palette=cfg.mask_palette,
                          tile=cfg.tile, tile_overlap=cfg.tile_overlap)
        ds, teacher_ds = cross_modal_views(cfg, ds)
        unl_x = load_unlabeled(cfg.unlabeled, ds) if cfg.unlabeled is not None else None
    teachers = load_teachers(cfg, teacher_ds or ds, run_dir, resume, want)
    cfg, terms = boxes_only_terms(cfg, teachers, terms, kd_given)
    check_ld_teacher(teachers, terms)
    check_from_teacher(cfg, teachers, teacher_ds)
    check_torchvision_bands(cfg, ds)
    check_feature_modules(cfg, ds, teachers, want, teacher_ds)
    check_stage_pairs(cfg, ds, teachers, want, teacher_ds)
    threads = cfg.threads or default_threads()
    prof = ProfileSettings(threads=threads, warmup=cfg.profile_warmup, min_runs=cfg.profile_min_runs,
                           min_seconds=cfg.profile_min_seconds, energy_meter=cfg.energy_meter)
    cache = None if cfg.no_cache else MeasurementCache((cfg.cache_dir or default_cache_dir()) / "measurements.sqlite")
    measurer = measurer_for(target, prof, cache, cfg.device_url, cfg.device_token_file, device_threads=cfg.threads,
                            devices_file=cfg.devices_file, device_timeout_s=cfg.device_timeout_s,
                            board_tolerance=cfg.board_tolerance)
    kd = KDSettings(alpha=cfg.kd_alpha, temperature=cfg.kd_temperature,
                    teacher_weights=tuple(cfg.teacher_weights or [1.0] * (1 + len(teachers.extra))),
                    robust_rho=cfg.robust_rho, feature_distance=cfg.feature_distance,
                    weighting=cfg.kd_weighting, feature_importance=cfg.feature_importance)
    if cfg.train_threads is None:  # resolved once and written to config.yaml: a resumed run trains alike
        cfg = cfg.model_copy(update={"train_threads": default_train_threads()})
    budget_ms = cfg.budget_ms if cfg.budget_ms is not None else target.default_budget_ms  # until bind_budget
    return RunPlan(cfg=cfg, resume=resume, target=target, budget_ms=budget_ms,
                   budget_source="--budget-ms" if cfg.budget_ms is not None else "not yet bound",
                   terms=terms, needs=want, run_dir=run_dir, measurer=measurer, threads=threads, ds=ds,
                   unlabeled_x=unl_x, teachers=teachers, kd=kd, export_formats=formats, export_note=export_note,
                   deadline=None if cfg.max_minutes is None else timer.start + 60 * cfg.max_minutes,
                   train_threads=cfg.train_threads or 1, teacher_ds=teacher_ds)


def cross_modal_views(cfg: RunConfig, ds: Dataset) -> tuple[Dataset, Dataset | None]:
    """(the students' data, the teacher's) under --teacher-bands / --student-bands; without
    them, the data as loaded and None."""
    if not cfg.teacher_bands and not cfg.student_bands:
        return ds, None
    if cfg.unlabeled is not None:
        raise ConfigError("--teacher-bands/--student-bands with --unlabeled is not supported: unlabelled images are "
                          "read as RGB; leave out one of them")
    every = ds.bands  # `all`: every band of the data
    students = band_view(ds, every if cfg.student_bands == ["all"] else cfg.student_bands, "student") \
        if cfg.student_bands else ds
    teacher = band_view(ds, every if cfg.teacher_bands == ["all"] else cfg.teacher_bands, "teacher") \
        if cfg.teacher_bands else ds
    return students, teacher


SOFT_TARGET_TERMS = ("response", "multi-teacher", "semi-supervised")  # what --kd-weighting weights


def check_pairings(cfg: RunConfig, terms: list[tuple[str, float]]) -> None:
    """Options that only mean something beside another: refused rather than silently ignored."""
    if cfg.teacher_weights_file is not None and cfg.teacher is None:
        raise ConfigError("--teacher-weights gives the weights of a --teacher (timm:NAME, torchvision:NAME or a "
                          "factory); add --teacher, or leave --teacher-weights out")
    if cfg.kd_weighting != "none" and not any(n in SOFT_TARGET_TERMS for n, _ in terms):
        raise ConfigError(f"--kd-weighting {cfg.kd_weighting} weights the soft-target terms "
                          f"({', '.join(SOFT_TARGET_TERMS)}), and --kd {','.join(n for n, _ in terms)} has none; add "
                          "one (e.g. --kd response,relation) or leave --kd-weighting out")


def check_terms(terms: list[tuple[str, float]], task: str) -> None:
    """Every --kd term applies to the task's outputs."""
    allowed = get_task(task).kd_terms
    wrong = [n for n, _ in terms if n not in allowed]
    if wrong:
        raise ConfigError(f"--kd {wrong[0]} does not apply to {task}; use {', '.join(sorted(allowed))}")


def check_detection(cfg: RunConfig, terms: list[tuple[str, float]] | None = None) -> None:
    """What detection does not do (yet), refused before any work: teacher views other than the
    images as they are, extra teachers; LD without the GFL-style head."""
    if cfg.feature_importance == "boxes" and cfg.task != "detection":
        raise ConfigError("--feature-importance boxes weighs feature maps by the labels' boxes: use it with --task "
                          "detection (or none / attention)")
    if cfg.feature_distance == "cwd" and cfg.feature_importance != "none":
        raise ConfigError(f"--feature-distance cwd spreads each channel over the positions itself; leave "
                          f"--feature-importance {cfg.feature_importance} out (or use mse, l1 or cosine)")
    if cfg.task != "detection":
        return
    if cfg.teacher_views != 1:
        raise ConfigError(f"--teacher-views {cfg.teacher_views}: a detection teacher is cached on the images as they "
                          "are; leave --teacher-views at 1")
    if cfg.teachers:
        raise ConfigError("--teacher-extra: detection distils from one teacher; leave the extra teachers out")
    tv = torchvision_students(cfg.students)
    space = cfg.search_space.precisions if "precisions" in cfg.search_space.model_fields_set else []
    lower = sorted((set(cfg.precisions) | set(space)) - {"fp32"})
    if tv and lower:
        raise ConfigError(f"--students torchvision:{tv[0].model}: a torchvision detector is searched at fp32 (its "
                          f"graph holds its own NMS; edgekd quantizes only its own heads); leave --precisions "
                          f"{','.join(lower)} out, or that student")
    if any(name == "ld" for name, _ in terms or []) and cfg.det_head != "gfl":
        raise ConfigError("--kd ld distils the box-side distributions of GFL-style heads; add --det-head gfl (the "
                          "teacher edgekd builds and the students get that head) or leave ld out")


def check_torchvision_bands(cfg: RunConfig, ds: Dataset) -> None:
    """torchvision's detectors take RGB images (their transform normalises three bands)."""
    if cfg.task != "detection":
        return
    from ..models.tvdet import check_bands

    for spec in torchvision_students(cfg.students):
        check_bands(spec.model, ds.in_channels, "student")


def check_ld_teacher(teachers: Teachers, terms: list[tuple[str, float]]) -> None:
    """A given teacher distils by LD only when it has a GFL-style box head (the students get one
    from --det-head gfl, a cut student from the teacher)."""
    from ..models.detnet import edge_bins

    main = teachers.main
    if main is None or not any(name == "ld" for name, _ in terms) or edge_bins(main.model):
        return
    raise ConfigError(f"--kd ld: the teacher {main.name} has no GFL-style box head (box-side distributions); give a "
                      "timm:NAME teacher (it is built with --det-head gfl) or an edgekd checkpoint trained with "
                      "--det-head gfl, or leave ld out")


def boxes_only_terms(cfg: RunConfig, teachers: Teachers, terms: list[tuple[str, float]], kd_given: bool
                     ) -> tuple[RunConfig, list[tuple[str, float]]]:
    """A detection teacher known only by its boxes (a graph with NMS inside) teaches by
    pseudo-boxes alone: the task's default terms become `pseudo-box`; other terms asked for are
    refused, naming the fix."""
    from ..models.detnet import boxes_only

    main = teachers.main.model if teachers.main is not None else None
    if main is None or not boxes_only(main):
        return cfg, terms
    other = [name for name, _ in terms if name != "pseudo-box"]
    if not other:
        return cfg, terms
    if kd_given:
        raise ConfigError(f"--kd {other[0]}: the teacher gives boxes only (its graph has decoding and NMS inside), so "
                          "it can teach by pseudo-boxes only; pass --kd pseudo-box, or a teacher edgekd can read "
                          "the outputs of (timm:NAME, an edgekd checkpoint)")
    return cfg.model_copy(update={"kd": ["pseudo-box"]}), [("pseudo-box", 1.0)]


def check_students(students: list[str], task: str = "classification") -> None:
    """Every --students entry is edgenet, a timm model that exists, or a torchvision segmenter
    (segmentation) or detector (detection) edgekd builds."""
    _, others = parse_students(students)
    tv = torchvision_students(students)
    from ..models.segnet import TORCHVISION_SEGMENTERS

    if tv and task == "classification":
        kind = "detection" if tv[0].model in TORCHVISION_DET_STUDENTS else "segmentation"
        raise ConfigError(f"--students torchvision:{tv[0].model} is a {kind} student; use it with --task {kind}, or "
                          "name timm:NAME classifiers")

    known = TORCHVISION_DET_STUDENTS if task == "detection" else TORCHVISION_SEGMENTERS
    unknown = [s.model for s in tv if s.model not in known]
    if unknown:
        raise ConfigError(f"--students torchvision:{unknown[0]}: for --task {task} edgekd builds "
                          f"{', '.join(known)}" + (" (--students ssdlite)" if task == "detection" else ""))
    timm_specs = [s for s in others if isinstance(s, TimmSpec)]
    if timm_specs:
        import timm

        for spec in timm_specs:
            if not timm.is_model(spec.model):
                hint = close_matches(spec.model, timm.list_models())
                raise ConfigError(f"--students timm:{spec.model}: timm has no such model; {hint}list them with "
                                  "python -c 'import timm; print(timm.list_models())'")


def check_from_teacher(cfg: RunConfig, teachers: Teachers, teacher_ds: Dataset | None) -> None:
    """--students from-teacher cuts students from the teacher: it must be a model edgekd can edit
    and rebuild, and see the students' bands. Checked before any work. Feature terms and dense
    tasks need nothing more: a cut student has the teacher's stages, module names and heads, with
    fewer channels (the adapters map them)."""
    if "from-teacher" not in cfg.students:
        return
    if teacher_ds is not None:
        raise ConfigError("--students from-teacher needs a teacher that sees the students' bands; leave out "
                          "--teacher-bands/--student-bands, or from-teacher")
    if teachers.main is not None:
        from ..models.shrink import teacher_record

        try:
            teacher_record(teachers.main.model, 1, 1)
        except ValueError as exc:
            raise ConfigError(f"--students from-teacher: {exc}") from None


def lock_run_dir(run_dir: Path) -> IO[str]:
    """An exclusive lock on RUN_DIR/.lock for as long as the returned file stays open (the
    process's life); another process holding it is a RunDirError naming its pid."""
    import fcntl
    import os

    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115  (held open on purpose: the lock lives with it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise RunDirError(f"run directory {run_dir} is in use by another edgekd optimize (pid {holder}); wait for it "
                          "to finish, or pass another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


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


def _teacher_matches(meta: dict[str, Any], ds: Dataset, path: str) -> None:
    if meta["classes"] != ds.classes:
        raise CheckpointError(
            f"teacher {path} was trained on classes {meta['classes']}, but the data set has "
            f"{ds.classes}; pass a teacher trained on this data set, or leave out --teacher to train one")
    if int(meta["in_channels"]) != ds.in_channels:
        raise CheckpointError(
            f"teacher {path} takes {meta['in_channels']} input bands, the data set has {ds.in_channels} "
            f"({', '.join(ds.bands)}); pass a matching teacher or leave out --teacher")


def _load_teacher(spec: str, cfg: RunConfig, ds: Dataset, weights: Path | None = None) -> LoadedModel:
    """A teacher from any model source, checked against the data set: an edgekd checkpoint must
    name the same classes and bands; a model from elsewhere gets the data set's bands and classes
    (and is then fine-tuned on it)."""
    mean, std = ds.channel_stats()
    loaded = load_model(spec, SourceRequest(in_channels=ds.in_channels, num_classes=len(ds.classes), data_mean=mean,
                                            data_std=std, weights=weights, normalization=cfg.teacher_normalization,
                                            require_weights=True, task=ds.task, image_size=ds.image_size,
                                            det_head=cfg.det_head))
    if loaded.meta is not None:
        _teacher_matches(loaded.meta, ds, spec)
    return loaded


def load_teachers(cfg: RunConfig, ds: Dataset, run_dir: Path, resume: bool, want: frozenset[str]) -> Teachers:
    """The given or resumed main teacher (or None: train one) and the extra teachers, all
    checked against the data set and the KD terms before anything is written."""
    main = None
    if resume and (run_dir / "teacher.pt").exists():
        main = _load_teacher(str(run_dir / "teacher.pt"), cfg, ds)
        main.origin = "resumed from the run directory"
    elif cfg.teacher is not None:
        main = _load_teacher(cfg.teacher, cfg, ds, cfg.teacher_weights_file)
    extra = []
    for spec in cfg.teachers:
        t = _load_teacher(spec, cfg, ds)
        if t.needs_training:
            raise ConfigError(f"--teacher-extra {spec} does not predict the data set's {len(ds.classes)} classes; "
                              "extra teachers are used as they are: pass teachers trained on this data set")
        extra.append(t.model)
    named = cfg.feature_modules is not None and main is not None and main.onnx_path is None
    if main is not None and want & {"features", "embedding"} and not (main.supports_features or named):
        why = ("an ONNX teacher gives logits only" if main.onnx_path is not None
               else f"{main.name} has no stage features edgekd can read")
        raise ConfigError(f"--kd feature and relation compare the teacher's inner features, but {why}; use "
                          "response, robust, multi-teacher or semi-supervised terms, or give the teacher as a timm, "
                          "torchvision or edgekd model")
    return Teachers(main, extra)


def check_feature_modules(cfg: RunConfig, ds: Dataset, teachers: Teachers, want: frozenset[str],
                          teacher_ds: Dataset | None = None) -> None:
    """feature_pairs by module name: every name exists and runs in the teacher and in each configured
    student (a probe forward at the data's size), and a feature term uses them."""
    named = cfg.feature_modules
    if named is None:
        return
    if "features" not in want:
        raise ConfigError("feature_pairs pair feature maps for the feature KD term, but --kd has none; add "
                          "--kd response,feature or leave out feature_pairs")
    from ..models.taps import tapped_channels

    tds = teacher_ds or ds
    tapped_channels(_probe_teacher(cfg, ds, teachers, teacher_ds), named[1], tds.in_channels, ds.image_size, "teacher")
    for spec, student in _bare_students(cfg, ds):
        tapped_channels(student, named[0], ds.in_channels, ds.image_size, f"student {spec.name}")


def _probe_teacher(cfg: RunConfig, ds: Dataset, teachers: Teachers, teacher_ds: Dataset | None) -> nn.Module:
    """The given teacher, or the structure of the one the run would train (for probing its stages)."""
    from ..models.sources import build_student

    if teachers.main is not None:
        return teachers.main.model
    tds = teacher_ds or ds
    return build_student(cfg.teacher_arch, tds.in_channels, len(ds.classes), [0.0] * tds.in_channels,
                         [1.0] * tds.in_channels, task=ds.task, det_head=cfg.det_head)[0]


def _bare_students(cfg: RunConfig, ds: Dataset) -> Iterator[tuple[ArchSpec | ExternalSpec, nn.Module]]:
    """(spec, structure) of every configured student (grid candidates and named models); students
    cut from the teacher are left out: they have the teacher's stages and names, checked on it."""
    from ..models.arch import FromTeacherSpec
    from ..models.sources import build_student

    edgenet, others = parse_students(cfg.students)
    for spec in [*(cfg.candidates if edgenet else []), *others]:
        if isinstance(spec, FromTeacherSpec):
            continue
        yield spec, build_student(spec, ds.in_channels, len(ds.classes), [0.0] * ds.in_channels,
                                  [1.0] * ds.in_channels, pretrained=False, task=ds.task,
                                  det_head=cfg.det_head, image_size=ds.image_size)[0]


def check_stage_pairs(cfg: RunConfig, ds: Dataset, teachers: Teachers, want: frozenset[str],
                      teacher_ds: Dataset | None = None) -> None:
    """feature_pairs by stage index: a feature term uses them, and every index names a stage of the
    teacher and of each configured student (checked before the teacher is trained, so a bad pair
    is never written to config.yaml of a run that then dies)."""
    pairs = cfg.stage_pairs
    if not pairs:
        return
    if "features" not in want:
        raise ConfigError("feature_pairs pair feature maps for the feature KD term, but --kd has none; add "
                          "--kd response,feature or leave out --feature-pairs")
    t_stages = len(getattr(_probe_teacher(cfg, ds, teachers, teacher_ds), "stage_channels", []))
    bad_t = [t for _, t in pairs if not 0 <= t < t_stages]
    if bad_t:
        raise ConfigError(f"--feature-pairs names teacher stage {bad_t[0]}, but the teacher has stages "
                          f"0..{t_stages - 1}; write STUDENT=TEACHER stage indices within them")
    cut = [("from-teacher", t_stages)] if "from-teacher" in cfg.students else []  # a cut has the teacher's stages
    for name, n in [*cut, *((spec.name, len(getattr(student, "stage_channels", [])))
                            for spec, student in _bare_students(cfg, ds))]:
        bad_s = [s for s, _ in pairs if not 0 <= s < n]
        if bad_s:
            raise ConfigError(f"--feature-pairs names student stage {bad_s[0]}, but student {name} has stages "
                              f"0..{n - 1}; write STUDENT=TEACHER stage indices within them")


def check_search_inputs(cfg: RunConfig) -> None:
    """Settings that would otherwise fail only after the teacher is trained: the energy meter's
    name, and a grid with nothing in it."""
    from ..profilers.energy import METERS

    if cfg.energy_meter != "auto" and cfg.energy_meter not in METERS:
        hint = close_matches(cfg.energy_meter, METERS.names())
        raise ConfigError(f"unknown energy meter {cfg.energy_meter!r}; {hint}choose auto or one of: "
                          f"{', '.join(METERS.names())}")
    if (cfg.workers > 1 or cfg.data_parallel > 1 or cfg.ray_address) and not _ray_installed():
        flag = "--workers" if cfg.workers > 1 else "--data-parallel" if cfg.data_parallel > 1 else "--ray-address"
        raise ConfigError(f"{flag} runs on Ray, which is not installed; run `pip install 'edgekd[ray]'` (or leave "
                          f"out {flag})")
    if cfg.ray_address:
        check_ray_address(cfg.ray_address)
    if cfg.workers > 1 and cfg.data_parallel > 1:
        raise ConfigError(f"--workers {cfg.workers} and --data-parallel {cfg.data_parallel}: choose one (candidates "
                          "in parallel, or each candidate on several workers)")
    edgenet, timm_specs = parse_students(cfg.students)
    if cfg.search == "grid" and not timm_specs and not (edgenet and cfg.candidates):
        raise ConfigError("the grid search has no candidates: list some under candidates: in the config file, add "
                          "--students (e.g. edgenet,mobilenetv3), or use --search tpe")


RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) cluster answers on its port before any work is done: Ray
    itself would retry an unreachable address without end after the teacher was trained."""
    import socket

    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray decides
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(f"--ray-address {address}: nothing answers at {host}:{port} ({why} within "
                          f"{RAY_CONNECT_TIMEOUT_S:g} s); start the cluster (ray start --head) or fix the address") \
            from None


def _ray_installed() -> bool:
    from ..search.workers import RayWorkers

    return RayWorkers.available()


def resolve_exports(cfg: RunConfig, target: Target) -> tuple[list[str], str | None]:
    """(formats to export, a note for the user): the given formats, checked now rather than after
    the training; or what the target runs. A TensorRT engine belongs to the GPU that builds it,
    so for a board without TensorRT here the engine is left to the board and the note says how."""
    from ..export import FORMATS, parse_formats
    from ..profilers import PROFILERS

    trt_missing = PROFILERS.get("tensorrt").unavailable()
    if cfg.export_formats is not None:
        try:
            formats = parse_formats(",".join(cfg.export_formats))
        except EdgeKDError as exc:
            raise ConfigError(f"--export-formats: {exc}") from None
        gpu = [f for f in formats if FORMATS[f].needs_gpu]
        if gpu and trt_missing:
            raise ConfigError(f"--export-formats {','.join(gpu)}: TensorRT engines are built on the NVIDIA device that "
                              f"runs them, and here {trt_missing}; export onnx here and run `edgekd export "
                              f"RUN_DIR/candidates/NAME/student.pt --formats {gpu[0]}` on the device")
        return formats, None
    formats = ["onnx"] + (["openvino"] if "openvino" in target.runtimes else [])
    if "tensorrt" not in target.runtimes:
        return formats, None
    if not trt_missing:
        return formats + ["tensorrt-fp16"], None
    return formats, (f"{target.name} runs TensorRT, whose engine is built on the device itself: copy "
                     "RUN_DIR/candidates/NAME/student.pt there and run `edgekd export student.pt --formats "
                     "tensorrt-fp16` (or `trtexec --onnx=student-NAME.onnx --fp16 --saveEngine=student.engine`)")


def load_unlabeled(folder: Path, ds: Dataset) -> torch.Tensor:
    """Images of a folder (any depth, no labels needed) at the data set's size and bands."""
    from ..data.folder import unlabeled_images

    x = unlabeled_images(folder, ds.image_size)
    if x.shape[1] != ds.in_channels:
        raise DataError(f"unlabelled images in {folder} have {x.shape[1]} bands, the data set {ds.in_channels}")
    return x
