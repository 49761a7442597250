"""`edgekd optimize`: the distiller loop of DESIGN.md section 2, as a short list of stages.

resolve the run -> teacher (load or train, outputs cached once, measured on the target) ->
search (proposals, screening, KD training by successive halving, every rung exported, profiled
and scored by J) -> select -> export the selected student with parity checks -> report."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import RunConfig
from ..console import ConsoleObserver
from ..errors import Interrupted
from ..report import write_reports
from ..tasks import get_task
from .baseline import baseline_stage
from .plan import RunPlan, StageTimer, resolve_run
from .reporting import build_report
from .stages import candidates_table, export_stage, search_stage, select_student, start_run_dir, teacher_stage


def run_optimize(cfg: RunConfig, observer: ConsoleObserver | None = None, resume: bool = False) -> Path:
    """Run the whole loop; returns the run directory holding report.json. With `resume`, the
    run directory of a stopped run is continued: finished work is read back, not redone."""
    observer = observer or ConsoleObserver(quiet=cfg.quiet)
    timer = StageTimer()
    torch.manual_seed(cfg.seed)
    plan = resolve_run(cfg, resume, timer)  # everything a user can get wrong, checked; nothing written
    torch.set_num_threads(plan.train_threads)
    start_run_dir(plan, observer)
    try:
        return _stages(plan, observer, timer)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: what finished is kept in {plan.run_dir} (the teacher, its outputs, every "
                          f"complete rung); continue with: edgekd optimize --resume {plan.run_dir}") from None


def _stages(plan: RunPlan, observer: ConsoleObserver, timer: StageTimer) -> Path:
    """The stages after the run directory is started (a Ctrl-C in them leaves a resumable run)."""
    timer.record_to(plan.run_dir / "stage_seconds.json", plan.resume)
    with observer:
        teacher = teacher_stage(plan, observer, timer)
        plan = plan.bind_budget(teacher.measurement.latency_ms.p50).with_reference(plan.run_dir / "teacher.onnx")
        observer.say(f"budget: p90 <= {plan.budget_ms:.4g} ms, {plan.budget_source}")
        search = search_stage(plan, teacher, observer, timer)
    choice = select_student(plan, search.trials, search.trainer.bare)
    observer.show(candidates_table(choice, teacher.measurement, observer.console.width, get_task(plan.ds.task).metric))
    observer.say(f"selected [bold green]{choice.selected}[/]: {choice.reason}")
    with observer:
        baseline = baseline_stage(plan, search, choice, observer, timer)
    exports = export_stage(plan, choice, observer, timer)
    detection = None
    if plan.ds.task == "detection":  # the NMS export, COCO figures, stage times, drawings
        from .detection_report import detection_summary

        with timer("detection report"):
            detection = detection_summary(plan, teacher, choice, observer)
    report = build_report(plan, teacher, search, choice, exports, timer, baseline, detection)
    write_reports(plan.run_dir, report)
    observer.say(f"report: {plan.run_dir / 'report.html'} (also report.md, report.json; total "
                 f"{report.stage_seconds['total']:.1f} s)")
    return plan.run_dir
