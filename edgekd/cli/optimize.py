"""`edgekd optimize`: the whole loop for one target. Its options, their help and defaults come
from RunConfig (edgekd/config.py), where each default lives once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import EdgeKDError
from .app import app, user_errors
from .options import config_option as opt

if TYPE_CHECKING:
    from ..config import RunConfig


@app.command()
@user_errors
def optimize(
    ctx: typer.Context,
    target: str | None = opt("target", "--target", "-t"),
    data: Path | None = opt("data", "--data"),
    task: str | None = opt("task", "--task"),
    mask_palette: Path | None = opt("mask_palette", "--mask-palette"),
    tile: int | None = opt("tile", "--tile"),
    tile_overlap: int | None = opt("tile_overlap", "--tile-overlap"),
    teacher: str | None = opt("teacher", "--teacher"),
    teacher_weights_file: Path | None = opt("teacher_weights_file", "--teacher-weights"),
    teacher_normalization: str | None = opt("teacher_normalization", "--teacher-normalization"),
    budget_ms: float | None = opt("budget_ms", "--budget-ms"),
    speedup: float | None = opt("speedup", "--speedup"),
    lambda_: float | None = opt("lambda_", "--lambda"),
    gamma: float | None = opt("gamma", "--gamma"),
    delta: float | None = opt("delta", "--delta"),
    preset: str | None = opt("preset", "--preset"),
    out: Path | None = opt("out", "--out", "-o"),
    overwrite: bool | None = opt("overwrite", "--overwrite"),
    seed: int | None = opt("seed", "--seed"),
    threads: int | None = opt("threads", "--threads"),
    train_threads: int | None = opt("train_threads", "--train-threads"),
    interleave: bool | None = opt("interleave", "--interleave/--no-interleave"),
    teacher_epochs: int | None = opt("teacher_epochs", "--teacher-epochs"),
    student_epochs: int | None = opt("student_epochs", "--student-epochs"),
    image_size: int | None = opt("image_size", "--image-size"),
    bands: str | None = opt("bands", "--bands"),
    split_file: Path | None = opt("split_file", "--split"),
    augmentations: str | None = opt("augmentations", "--augmentations"),
    teacher_bands: str | None = opt("teacher_bands", "--teacher-bands"),
    student_bands: str | None = opt("student_bands", "--student-bands"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file with the same keys as these "
                                          "flags (budget_ms, lambda, ...); flags win over the file, the file over "
                                          "the preset."),
    energy_meter: str | None = opt("energy_meter", "--energy-meter"),
    precisions: str | None = opt("precisions", "--precisions"),
    qat_epochs: int | None = opt("qat_epochs", "--qat-epochs"),
    export_formats: str | None = opt("export_formats", "--export-formats"),
    kd: str | None = opt("kd", "--kd"),
    teachers: list[str] | None = opt("teachers", "--teacher-extra"),
    students: str | None = opt("students", "--students"),
    student_weights_dir: Path | None = opt("student_weights_dir", "--student-weights-dir"),
    unlabeled: Path | None = opt("unlabeled", "--unlabeled"),
    teacher_views: int | None = opt("teacher_views", "--teacher-views"),
    feature_pairs: str | None = opt("feature_pairs", "--feature-pairs"),
    feature_distance: str | None = opt("feature_distance", "--feature-distance"),
    feature_importance: str | None = opt("feature_importance", "--feature-importance"),
    kd_weighting: str | None = opt("kd_weighting", "--kd-weighting"),
    det_head: str | None = opt("det_head", "--det-head"),
    search: str | None = opt("search", "--search"),
    trials: int | None = opt("trials", "--trials"),
    max_minutes: float | None = opt("max_minutes", "--max-minutes"),
    screen: bool | None = opt("screen", "--screen/--no-screen"),
    baseline: bool | None = opt("baseline", "--baseline/--no-baseline"),
    resume: Path | None = typer.Option(None, "--resume", help="Continue a stopped run in this run directory "
                                          "(its config.yaml); finished work is not redone."),
    no_cache: bool | None = opt("no_cache", "--no-cache"),
    workers: int | None = opt("workers", "--workers"),
    ray_address: str | None = opt("ray_address", "--ray-address"),
    data_parallel: int | None = opt("data_parallel", "--data-parallel"),
    device_url: list[str] | None = opt("device_url", "--device-url", metavar="URL"),
    devices_file: Path | None = opt("devices_file", "--devices", metavar="FILE"),
    device_timeout_s: float | None = opt("device_timeout_s", "--device-timeout"),
    device_token_file: Path | None = opt("device_token_file", "--device-token-file"),
    quiet: bool | None = opt("quiet", "--quiet", "-q"),
) -> None:
    """Distil, measure, select, export and report: the whole loop for one target (classification,
    segmentation or detection: --task, or the data's layout)."""
    from ..config import build_config, parse_flags

    # every flag and the config file are validated before torch and the runtimes are imported
    if resume is not None:
        cfg = _resumed(resume, ctx.params)
    else:
        cfg = build_config(parse_flags({k: v for k, v in ctx.params.items() if k not in ("config", "resume")}), config)
    from ..pipeline import run_optimize

    run_optimize(cfg, resume=resume is not None)


def _resumed(run_dir: Path, params: dict) -> RunConfig:
    """The stopped run's configuration, with the flags a resumed run may change (where and how
    it is measured, quiet)."""
    from ..config import Overrides, build_config

    if not (run_dir / "config.yaml").is_file():
        raise EdgeKDError(f"--resume {run_dir} holds no config.yaml; pass the run directory of an edgekd optimize run")
    keep = ("device_url", "devices_file", "device_timeout_s", "device_token_file")
    return build_config(Overrides(out=run_dir, quiet=bool(params.get("quiet")), **{k: params.get(k) for k in keep}),
                        run_dir / "config.yaml")
