"""The report of a run, built from the records the stages returned (edgekd.report.model.Report)."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..export import ExportResult
from ..host import software_versions
from ..measurers import Measurer
from ..measurers.pool import BoardPool
from ..metrics import class_metrics, metrics_from_confusion
from ..models.external import ExternalNet
from ..models.family import EdgeNet
from ..models.stats import count_macs, count_params
from ..report.model import (
    Baseline,
    DatasetSummary,
    DenseModelMetrics,
    DetectionSummary,
    KDSummary,
    KDTermWeight,
    MeasurementMode,
    ModelMetrics,
    ObjectiveSummary,
    Parallelism,
    Report,
    SceneCost,
    ScreenSettings,
    SearchSummary,
    TeacherSummary,
    TrainingSummary,
)
from ..search.candidates import TrialStatus
from ..tasks import task_of
from .plan import RunPlan, StageTimer
from .stages import SearchResult, Selection, TeacherResult, model_name


def _objective(plan: RunPlan, search: SearchResult) -> ObjectiveSummary:
    cfg, o = plan.cfg, search.objective
    return ObjectiveSummary(
        lambda_=o.lam, gamma=o.gamma, delta=o.delta,
        weights={"latency": o.weights.latency, "memory": o.weights.memory, "energy": o.weights.energy},
        kd=KDSummary(terms=[KDTermWeight(name=n, weight=w) for n, w in plan.terms], alpha=cfg.kd_alpha,
                     temperature=cfg.kd_temperature, teacher_views=cfg.teacher_views, weighting=cfg.kd_weighting,
                     feature_distance=cfg.feature_distance, feature_importance=cfg.feature_importance,
                     det_head=cfg.det_head if cfg.task == "detection" else None))


def _teacher(plan: RunPlan, teacher: TeacherResult) -> TeacherSummary:
    t = teacher.model
    torch_model = isinstance(t, (EdgeNet, ExternalNet))
    return TeacherSummary(name=model_name(t), arch=t.arch if isinstance(t, EdgeNet) else None, origin=teacher.origin,
                          params=count_params(t) if torch_model else None,
                          macs=count_macs(t, tuple(plan.teacher_input_shape)) if torch_model else None,
                          checkpoint="teacher.pt" if torch_model else None,
                          val_accuracy=teacher.accuracy, val_cross_entropy=teacher.cross_entropy,
                          train_loss=teacher.train_loss, measurement=teacher.measurement,
                          bands=plan.teacher_view.bands)


def _search(plan: RunPlan, search: SearchResult) -> SearchSummary:
    trials = search.trials
    wasted = sum(r.train_seconds for t in trials for r in t.rungs if t.last is not None and not t.last.meets_budget)
    return SearchSummary(
        mode=plan.cfg.search, rung_epochs=search.rung_epochs, eta=plan.cfg.eta, proposals=len(trials),
        screened_out=sum(t.status == TrialStatus.SCREENED_OUT for t in trials),
        screen=ScreenSettings(on=plan.cfg.screen, slack=plan.cfg.screen_slack),
        train_seconds_total=round(sum(r.train_seconds for t in trials for r in t.rungs), 2),
        train_seconds_on_over_budget_students=round(wasted, 2))


def _student_logits(plan: RunPlan, choice: Selection) -> Callable[[Any], torch.Tensor]:
    """The selected student at its precision (an INT8 student through its INT8 graph)."""
    from ..distill.trainer import predict_logits
    from ..models.io import load_checkpoint
    from ..profilers.runner import onnx_logits

    best = choice.best
    if best.precision == "fp32":
        student, _ = load_checkpoint(plan.run_dir / "candidates" / best.arch.name / "student.pt")
        return lambda x: predict_logits(student, x)
    return lambda x: onnx_logits(plan.run_dir / best.onnx, x, plan.threads)  # as validated and measured


OVERLAY_TILES = 4


def per_class_dense(plan: RunPlan, teacher: TeacherResult, choice: Selection
                    ) -> tuple[list[DenseModelMetrics], list[str]]:
    """Segmentation: per-class IoU of the teacher and the selected student on the validation (and
    test) split, and a PNG of a few validation tiles with their true and predicted masks."""
    from ..distill.trainer import predict_logits
    from ..report.plots import mask_overlay
    from ..tasks.segmentation import segmentation_metrics, upsample

    ds, run = plan.ds, _student_logits(plan, choice)
    ignore = ds.ignore_index if ds.ignore_index is not None else 255
    out, student_val = [], None
    for name, fn, val, view in (("teacher", lambda x: predict_logits(teacher.model, x), teacher.val_logits,
                                 plan.teacher_view), (choice.best.name, run, None, ds)):
        logits = val if val is not None else fn(view.x_val)
        student_val = logits
        test = None
        if view.x_test is not None and ds.y_test is not None:
            test = segmentation_metrics(fn(view.x_test), ds.y_test, ds.classes, ignore, "test")
        out.append(DenseModelMetrics(model=name, validation=segmentation_metrics(logits, ds.y_val, ds.classes, ignore,
                                                                                 "validation"), test=test))
    n = min(OVERLAY_TILES, len(ds.y_val))
    idx = torch.linspace(0, len(ds.y_val) - 1, n).long()
    size = ds.y_val.shape[-2:]
    rows = [(plan.ds.x_val[int(i)].numpy(), ds.y_val[int(i)].numpy(),
             upsample(teacher.val_logits[int(i)][None], size).argmax(1)[0].numpy(),
             upsample(student_val[int(i)][None], size).argmax(1)[0].numpy()) for i in idx]  # type: ignore[index]
    mask_overlay(plan.run_dir / "mask_overlays.png", rows, ds.classes, ignore)
    return out, ["mask_overlays.png"]


MAX_SCENES = 20  # whole validation scenes evaluated by sliding window in the report


def scene_figures(plan: RunPlan, teacher: TeacherResult, choice: Selection) -> list[DenseModelMetrics]:
    """Tiled segmentation: the teacher and the selected student run over whole validation scenes
    by sliding window (the training tiles' grid, overlaps blended), scored against the full masks."""
    from PIL import Image

    from ..data.masks import mask_values, read_classes
    from ..distill.trainer import predict_logits
    from ..tasks.scenes import predict_scene
    from ..tasks.segmentation import confusion

    ds, cfg = plan.ds, plan.cfg
    if not cfg.tile or not ds.val_scenes or ds.band_scale is not None or cfg.data is None:
        return []  # GeoTIFF scenes: their band scaling is per tile here; not evaluated whole
    classes, k = read_classes(Path(cfg.data)), len(ds.classes)
    run = _student_logits(plan, choice)
    out = []
    for name, fn in (("teacher", lambda x: predict_logits(teacher.model, x)), (choice.best.name, run)):
        cm = torch.zeros(k, k, dtype=torch.long)
        for img, mask in ds.val_scenes[:MAX_SCENES]:
            with Image.open(img) as im:
                x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0)
            truth = torch.from_numpy(mask_values(Path(mask), Path(img), classes, None).astype(np.int64))
            logits = predict_scene(fn, x, cfg.tile, cfg.tile_overlap, ds.image_size)
            cm += confusion(logits.argmax(0), truth, k, classes.ignore_index)
        m = metrics_from_confusion(cm, ds.classes, f"validation scenes, sliding window ({cfg.tile} px tiles, "
                                   f"{cfg.tile_overlap} px overlap blended)", min(len(ds.val_scenes), MAX_SCENES))
        out.append(DenseModelMetrics(model=name, validation=m))
    return out


def scene_cost(plan: RunPlan, teacher: TeacherResult, choice: Selection) -> SceneCost:
    from ..tasks.scenes import ms_per_megapixel

    cfg, ds = plan.cfg, plan.ds
    tile, overlap = (cfg.tile, cfg.tile_overlap) if cfg.tile else (ds.image_size, 0)
    basis = ("source imagery (each tile resized to the model's input)" if cfg.tile
             else f"the model's {ds.image_size} px input (no --tile: tiles as the data holds them, side by side)")
    return SceneCost(tile=tile, overlap=overlap, basis=basis,
                     teacher_ms_per_mp=round(ms_per_megapixel(teacher.measurement.latency_ms.p50, tile, overlap), 3),
                     student_ms_per_mp=round(ms_per_megapixel(choice.best.measurement.latency_ms.p50, tile, overlap),
                                             3), source=choice.best.measurement.source["latency"])


def per_class(plan: RunPlan, teacher: TeacherResult, choice: Selection) -> list[ModelMetrics]:
    """Per-class figures of the teacher and of the selected student (at its precision: an INT8
    student through its INT8 graph) on the validation split and, when given, the test split."""
    from ..distill.trainer import predict_logits

    ds = plan.ds
    run = _student_logits(plan, choice)
    out = []
    for name, fn, val, view in (("teacher", lambda x: predict_logits(teacher.model, x), teacher.val_logits,
                                 plan.teacher_view), (choice.best.name, run, None, ds)):
        logits = val if val is not None else fn(view.x_val)
        test = None
        if view.x_test is not None and ds.y_test is not None:
            test = class_metrics(fn(view.x_test).argmax(1).numpy(), ds.y_test.numpy(), ds.classes, split="test")
        out.append(ModelMetrics(model=name, validation=class_metrics(logits.argmax(1).numpy(), ds.y_val.numpy(),
                                                                     ds.classes), test=test))
    return out


def build_report(plan: RunPlan, teacher: TeacherResult, search: SearchResult, choice: Selection,
                 exports: list[ExportResult], timer: StageTimer, baseline: Baseline | None = None,
                 detection: DetectionSummary | None = None) -> Report:
    cfg = plan.cfg
    m = plan.measurer
    task = task_of(plan.ds)
    dense, overlays = per_class_dense(plan, teacher, choice) if plan.ds.task == "segmentation" else ([], [])
    return Report(
        detection=detection,
        task=plan.ds.task, metric=task.metric, per_class_iou=dense, mask_overlays=overlays,
        scene_cost=scene_cost(plan, teacher, choice) if dense else None,
        scenes=scene_figures(plan, teacher, choice) if dense else [],
        run_id=plan.run_id, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]), resumed=plan.resume, target=plan.target,
        budget_ms=plan.budget_ms, budget_source=plan.budget_source,
        measurement=_measurement_mode(m),
        objective=_objective(plan, search),
        dataset=DatasetSummary.model_validate({**plan.ds.summary(), "subsampled": plan.subsampled}),
        teacher=_teacher(plan, teacher),
        training=TrainingSummary(
            epochs_teacher=cfg.teacher_epochs, epochs_student=cfg.student_epochs, batch_size=cfg.batch_size,
            lr=cfg.lr, seed=cfg.seed, torch_threads=torch.get_num_threads(),
            teacher_outputs=f"computed once for {cfg.teacher_views} dihedral view(s) of every training image, "
                            "memory-mapped under teacher_cache/, shared by every candidate"),
        search=_search(plan, search), candidates=choice.candidates, trials=[t.summary() for t in search.trials],
        pareto_front=choice.pareto_front, selected=choice.selected, selection_reason=choice.reason,
        precisions=choice.precisions, baseline=baseline,
        per_class=[] if dense or detection else per_class(plan, teacher, choice),
        exports=exports, software=software_versions(), stage_seconds={**timer.seconds, "total": timer.total()},
        parallelism=Parallelism(training_workers=search.training_workers, boards=_boards_used(m)),
        config=cfg.model_dump(mode="json", by_alias=True))


def _measurement_mode(m: Measurer) -> MeasurementMode:
    """Where the figures came from; for a pool of boards, each board and what it did."""
    boards: list[dict] = m.summary() if isinstance(m, BoardPool) else []
    return MeasurementMode(mode=m.mode, runtime=m.runtime, how=m.describe, boards=boards,
                           disagreements=getattr(m, "disagreements", []), notes=getattr(m, "notes", []))


def _boards_used(m: Measurer) -> int:
    if isinstance(m, BoardPool):
        return sum(b["jobs"] > 0 for b in m.summary())
    return 1 if m.mode == "remote" else 0
