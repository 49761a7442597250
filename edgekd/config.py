"""Typed configuration: one `RunConfig` per run, from a preset, a YAML file and flags.

Precedence, lowest first: preset defaults < YAML file < command-line flags. The YAML file uses
the same keys as the flags (`budget_ms`, `lambda`, `gamma`, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .export.parity import DEFAULT_TOLERANCES, ParityTolerance
from .models.arch import ArchSpec
from .models.space import SearchSpace


class RunConfig(BaseModel):
    """Everything one `edgekd optimize` run depends on; written to RUN_DIR/config.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    preset: Literal["smoke", "default"] = "default"
    target: str = "cpu"
    data: Path | None = None
    teacher: Path | None = None
    out: Path | None = None
    overwrite: bool = False
    seed: int = 0
    budget_ms: float | None = Field(default=None, description="t_real-time; default: the target's")
    lambda_: float = Field(default=0.5, alias="lambda", ge=0)
    gamma: float = Field(default=10.0, ge=0)
    delta: float = Field(default=0.0, ge=0, description="weight of energy per inference, per mJ")
    w_latency: float = Field(default=0.6, ge=0)
    w_memory: float = Field(default=0.2, ge=0)
    w_energy: float = Field(default=0.2, ge=0)
    # data
    samples_per_class: int = Field(default=300, ge=4, description="demo data set only")
    image_size: int | None = Field(default=None, ge=8, le=1024)
    val_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    max_samples_per_class: int | None = Field(default=None, ge=2)
    # models and training
    teacher_arch: ArchSpec = ArchSpec(width=1.5, depth=3, expansion=4)
    candidates: list[ArchSpec] = []
    teacher_epochs: int = Field(default=10, ge=1)
    student_epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    kd_alpha: float = Field(default=0.5, ge=0, le=1)
    kd_temperature: float = Field(default=4.0, gt=0)
    # profiling
    threads: int | None = Field(default=None, ge=1, description="inference threads; default: physical cores")
    profile_warmup: int = Field(default=10, ge=0)
    profile_min_runs: int = Field(default=50, ge=1)
    profile_min_seconds: float = Field(default=1.0, ge=0)
    energy_meter: str = "auto"
    no_cache: bool = False
    cache_dir: Path | None = None
    device_url: str | None = None
    device_token_file: Path | None = None
    precisions: list[Literal["fp32", "int8"]] = Field(default=["fp32"], description="precisions searched")
    # distillation
    kd: list[str] = Field(default=["response"], description="KD terms NAME[:WEIGHT]: response, feature, relation, "
                                                            "multi-teacher, semi-supervised, robust")
    teachers: list[Path] = Field(default=[], description="extra teachers for multi-teacher KD")
    teacher_weights: list[float] = []
    unlabeled: Path | None = None
    teacher_views: int = Field(default=1, ge=1, le=8, description="dihedral views cached per training image")
    feature_pairs: list[tuple[int, int]] | None = None
    robust_rho: float = Field(default=0.5, gt=0, le=1)
    feature_distance: Literal["mse", "cosine"] = "mse"
    # search
    search: Literal["grid", "tpe", "nsga2"] = "grid"
    trials: int = Field(default=16, ge=1)
    bracket_size: int = Field(default=8, ge=1)
    rungs: int = Field(default=3, ge=1, le=6)
    eta: int = Field(default=2, ge=2)
    screen: bool = True
    screen_slack: float = Field(default=1.5, gt=0, description="drop proposals whose screened p90 > slack x budget")
    max_minutes: float | None = Field(default=None, gt=0)
    search_space: SearchSpace = SearchSpace()
    # exports of the selected student, each checked against PyTorch
    export_formats: list[str] = ["onnx", "openvino"]
    calibration_size: int = Field(default=300, ge=1, description="INT8 calibration images")
    max_accuracy_drop: float | None = Field(default=None, gt=0, lt=1, description="accuracy-controlled INT8")
    parity: dict[str, ParityTolerance] = Field(default_factory=lambda: dict(DEFAULT_TOLERANCES),
                                               description="tolerance per precision: fp32, fp16, int8")
    quiet: bool = False

    @field_validator("budget_ms")
    @classmethod
    def _positive_budget(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be a positive number of milliseconds, e.g. --budget-ms 20")
        return v

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "candidates": [
            {"width": w, "depth": d} for w in (0.25, 0.5, 1.0) for d in (1, 2)
        ],
    },
    # about a minute on a 2-core CPU: what tests and CI run
    "smoke": {
        "samples_per_class": 60,
        "max_samples_per_class": 60,
        "image_size": 32,
        "teacher_arch": {"width": 1.0, "depth": 1, "expansion": 2},
        "candidates": [{"width": 0.25, "depth": 1}, {"width": 0.5, "depth": 1}, {"width": 0.25, "depth": 2}],
        "teacher_epochs": 3,
        "student_epochs": 2,
        "batch_size": 32,
        "profile_warmup": 5,
        "profile_min_runs": 50,
        "profile_min_seconds": 0.1,
        "calibration_size": 64,
    },
}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} cannot be read as YAML ({exc.__class__.__name__}); fix its syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_") if k != "lambda" else k: v for k, v in raw.items()}


def build_config(flags: dict[str, Any], config_file: Path | None = None) -> RunConfig:
    """Merge preset < YAML < flags (flags that are None were not given) into a RunConfig."""
    from_file = _read_yaml(config_file) if config_file else {}
    given = {k: v for k, v in flags.items() if v is not None}
    preset = given.get("preset") or from_file.get("preset") or "default"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    merged = {**PRESETS[preset], **from_file, **given, "preset": preset}
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        flag = "--" + where.replace("_", "-").rstrip("-")
        raise ConfigError(f"invalid value for {flag} ({where}): {err['msg']}") from None
