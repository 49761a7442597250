"""`edgekd optimize`: the whole loop for one target. Its options, their help and defaults come
from RunConfig (edgekd/config.py), where each default lives once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import EdgeKDError
from .app import app, user_errors
from .options import config_option as opt


@app.command()
@user_errors
def optimize(
    ctx: typer.Context,
    target: Optional[str] = opt("target", "--target", "-t"),
    data: Optional[Path] = opt("data", "--data"),
    teacher: Optional[Path] = opt("teacher", "--teacher"),
    budget_ms: Optional[float] = opt("budget_ms", "--budget-ms"),
    lambda_: Optional[float] = opt("lambda_", "--lambda"),
    gamma: Optional[float] = opt("gamma", "--gamma"),
    delta: Optional[float] = opt("delta", "--delta"),
    preset: Optional[str] = opt("preset", "--preset"),
    out: Optional[Path] = opt("out", "--out", "-o"),
    overwrite: Optional[bool] = opt("overwrite", "--overwrite"),
    seed: Optional[int] = opt("seed", "--seed"),
    threads: Optional[int] = opt("threads", "--threads"),
    teacher_epochs: Optional[int] = opt("teacher_epochs", "--teacher-epochs"),
    student_epochs: Optional[int] = opt("student_epochs", "--student-epochs"),
    image_size: Optional[int] = opt("image_size", "--image-size"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with the same keys as these "
                                          "flags (budget_ms, lambda, ...); flags win over the file, the file over "
                                          "the preset."),
    energy_meter: Optional[str] = opt("energy_meter", "--energy-meter"),
    precisions: Optional[str] = opt("precisions", "--precisions"),
    export_formats: Optional[str] = opt("export_formats", "--export-formats"),
    kd: Optional[str] = opt("kd", "--kd"),
    teachers: Optional[list[Path]] = opt("teachers", "--teacher-extra"),
    unlabeled: Optional[Path] = opt("unlabeled", "--unlabeled"),
    teacher_views: Optional[int] = opt("teacher_views", "--teacher-views"),
    search: Optional[str] = opt("search", "--search"),
    trials: Optional[int] = opt("trials", "--trials"),
    max_minutes: Optional[float] = opt("max_minutes", "--max-minutes"),
    screen: Optional[bool] = opt("screen", "--screen/--no-screen"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a stopped run in this run directory "
                                          "(its config.yaml); finished work is not redone."),
    no_cache: Optional[bool] = opt("no_cache", "--no-cache"),
    device_url: Optional[str] = opt("device_url", "--device-url"),
    device_token_file: Optional[Path] = opt("device_token_file", "--device-token-file"),
    quiet: Optional[bool] = opt("quiet", "--quiet", "-q"),
) -> None:
    """Distil, measure, select, export and report: the whole loop for one target."""
    from ..config import Overrides, build_config
    from ..pipeline import run_optimize

    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise EdgeKDError(f"--resume {resume} holds no config.yaml; pass the run directory of an edgekd optimize run")
        cfg = build_config(Overrides(out=resume, quiet=bool(quiet), device_url=device_url,
                                     device_token_file=device_token_file), resume / "config.yaml")
        run_optimize(cfg, resume=True)
        return
    given = {k: v for k, v in ctx.params.items() if k not in ("config", "resume")}
    run_optimize(build_config(Overrides.model_validate(given), config))
