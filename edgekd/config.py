"""Typed configuration: one `RunConfig` per run, from a preset, a YAML file and flags.

Precedence, lowest first: preset defaults < YAML file < command-line flags. The YAML file uses
the same keys as the flags (`budget_ms`, `lambda`, `gamma`, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .models.arch import ArchSpec
from .models.space import SearchSpace
from .registry import close_matches
from .tolerances import DEFAULT_TOLERANCES, ParityTolerance


class RunConfig(BaseModel):
    """Everything one `edgekd optimize` run depends on; written to RUN_DIR/config.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    preset: Literal["smoke", "default"] = Field(
        default="default", description="smoke (about a minute: tiny data, 3 candidates, short training) or default")
    target: str = Field(default="cpu", description="target device name or alias (see `edgekd targets`)")
    data: Path | None = Field(default=None, description="image-folder data set, one sub-folder per class "
                                                       "(default: the built-in synthetic demo set)")
    teacher: str | None = Field(default=None, description="the teacher: an edgekd checkpoint, timm:NAME, "
                                                         "torchvision:NAME, a TorchScript (.pt) or torch.export "
                                                         "(.pt2) file, an ONNX file, or package.module:function "
                                                         "(default: train an EdgeNet first)")
    teacher_weights_file: Path | None = Field(default=None, description="state dict (.pth/.safetensors) of a "
                                                                       "timm, torchvision or factory teacher")
    teacher_normalization: Literal["none", "data", "imagenet"] = Field(
        default="none", description="input normalisation of a TorchScript, torch.export or factory teacher that "
                                    "does not record its own: none (it takes raw 0..1 images), data, imagenet")
    out: Path | None = Field(default=None, description="run directory (default: runs/TARGET-TIMESTAMP)")
    overwrite: bool = Field(default=False, description="write into a run directory that already holds files")
    seed: int = Field(default=0, description="seed of data generation, splits and training")
    budget_ms: float | None = Field(default=None, description="real-time budget t_real-time for the p90 latency, ms "
                                                             "(default: the teacher's p50 / --speedup, or the "
                                                             "target's budget when that is tighter)")
    speedup: float = Field(default=5.0, ge=1, description="without --budget-ms: the budget for a student's p90 is "
                                                          "the teacher's p50 on the target divided by this (capped "
                                                          "by the target's own budget, 33.3 ms for cpu)")
    lambda_: float = Field(default=0.5, alias="lambda", ge=0, description="weight λ of the hardware cost C_hw in J")
    gamma: float = Field(default=10.0, ge=0, description="real-time penalty γ added to J when p90 > budget")
    delta: float = Field(default=0.0, ge=0, description="weight δ of energy per inference in J, per mJ")
    w_latency: float = Field(default=0.6, ge=0)
    w_memory: float = Field(default=0.2, ge=0)
    w_energy: float = Field(default=0.2, ge=0)
    # data
    task: Literal["auto", "classification", "segmentation", "detection"] = Field(
        default="auto", description="what the model predicts: classification (a class per image), segmentation "
                                    "(a class per pixel) or detection (boxes of classes); auto reads it from the "
                                    "data's layout (class folders: classification; images/ + masks/: segmentation; "
                                    "annotations.json (COCO) or labels/ (YOLO): detection; no --data: "
                                    "classification)")
    mask_palette: Path | None = Field(default=None, description="segmentation: JSON map of mask colours to class "
                                                               "indices ({\"#3C1098\": 0, ...}) that converts "
                                                               "colour-coded RGB masks")
    tile: int | None = Field(default=None, ge=16, le=8192, description="segmentation and detection: cut images "
                                                                      "larger than this into tile x tile px windows "
                                                                      "for training "
                                                                      "(resized to --image-size); the tiles of an "
                                                                      "image stay on one side of the split")
    tile_overlap: int = Field(default=32, ge=0, description="segmentation and detection: px by which neighbouring "
                                                            "tiles overlap (--tile)")
    teacher_cache_max_gb: float = Field(default=8.0, gt=0, description="largest teacher-output cache written to "
                                                                       "disk; past it (dense logits of a large data "
                                                                       "set) the teacher runs live on every batch")
    samples_per_class: int = Field(default=300, ge=4, description="demo data set only")
    image_size: int | None = Field(default=None, ge=8, le=1024,
                                   description="input resolution, the tile size the model sees (default: 32 demo, "
                                               "64 image folders, 128 segmentation folders; detection: the letterbox "
                                               "size, a multiple of 32: 64 demo, 320 folders)")
    val_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    max_samples_per_class: int | None = Field(default=None, ge=2, description="at most this many images per class "
                                                                         "(segmentation: x the number of classes, "
                                                                         "of the whole folder); null: no cap")
    bands: list[str] | None = Field(default=None, description="bands of a GeoTIFF folder, by name (B04,B03,B02,B08) "
                                                             "or 1-based index (4,3,2,8), in the order the model "
                                                             "takes them (default: every band)")
    split_file: Path | None = Field(default=None, description="YAML or JSON file mapping train, val, test to image "
                                                               "paths relative to --data (CLASS/FILE): the user's own "
                                                               "split; a test split is evaluated once, at the end")
    teacher_bands: list[str] | None = Field(default=None, description="cross-modal KD: the bands the teacher sees, "
                                                                     "by name (default: the students' bands)")
    student_bands: list[str] | None = Field(default=None, description="cross-modal KD: the bands the students see "
                                                                     "(e.g. R,G,B for a drone camera while the "
                                                                     "teacher sees every band; default: every band)")
    augmentations: list[Literal["flip", "rot90", "crop"]] = Field(
        default=["flip"], description="augmentations of the teacher's training, per image: flip, rot90, crop (random "
                                      "resized crop); no colour jitter (students see the teacher's cached views, "
                                      "--teacher-views)")
    # models and training
    teacher_arch: ArchSpec = ArchSpec(width=1.5, depth=3, expansion=4)
    candidates: list[ArchSpec] = []
    student_weights_dir: Path | None = Field(default=None, description="folder of pretrained weights for timm "
                                                                      "students, NAME.safetensors/.pth/.pt")
    students: list[str] = Field(default=["edgenet"], description="students searched: edgenet (the configured "
                                                                 "candidates or the elastic space), families "
                                                                 "(mobilenetv3, efficientnet-lite, resnet18, "
                                                                 "mobilevit, efficientvit), timm:NAME models and "
                                                                 "from-teacher (the teacher cut to the share of "
                                                                 "its channels that meets the budget; a tpe/nsga2 "
                                                                 "search also drops some of its residual blocks); "
                                                                 "pretrained where weights are here")
    det_head: Literal["fcos", "gfl"] = Field(
        default="fcos", description="detection: the box head of the detectors edgekd builds (a timm: teacher, "
                                    "EdgeDet and timm: students): fcos (each side's log distance) or gfl (each "
                                    "side a distribution over 0..16 strides, its expectation the distance; what "
                                    "--kd ld distils)")
    teacher_epochs: int = Field(default=10, ge=1, description="epochs to train the teacher")
    student_epochs: int = Field(default=8, ge=1, description="KD epochs per candidate student")
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    kd_alpha: float = Field(default=0.5, ge=0, le=1)
    kd_temperature: float = Field(default=4.0, gt=0)
    # profiling
    threads: int | None = Field(default=None, ge=1,
                                description="inference threads for profiling (default: physical cores, no more "
                                            "than the CPUs this process may use: affinity and cgroup quota)")
    train_threads: int | None = Field(default=None, ge=1,
                                      description="PyTorch threads for training (default: the usable CPUs less "
                                                  "those other work keeps busy, at least 1)")
    interleave: bool = Field(default=True, description="time the teacher beside each candidate measured on this "
                                                       "machine, interleaved, so C_hw's ratios hold on a busy host")
    profile_warmup: int = Field(default=10, ge=0)
    profile_min_runs: int = Field(default=50, ge=1)
    profile_min_seconds: float = Field(default=1.0, ge=0)
    energy_meter: str = Field(default="auto", description="auto, rapl, nvml, ina3221, estimate or none")
    no_cache: bool = Field(default=False, description="measure every model even if the measurement cache holds it")
    cache_dir: Path | None = None
    device_url: list[str] | None = Field(default=None, description="URL of `edgekd agent` on the target device: "
                                                                  "every candidate is measured there (source: remote); "
                                                                  "given several times, a pool of boards")
    workers: int = Field(default=1, ge=1, le=1024, description="candidates of a rung trained in parallel as Ray tasks "
                                                              "(1: in this process, no Ray); needs edgekd[ray]")
    ray_address: str | None = Field(default=None, description="join this Ray cluster for --workers (else RAY_ADDRESS, "
                                                             "else a local Ray instance is started)")
    data_parallel: int = Field(default=1, ge=1, le=256, description="train each student data-parallel on this many "
                                                                    "Ray Train workers (DDP; 1: one process)")
    devices_file: Path | None = Field(default=None, description="YAML file listing boards (url, token_file, target, "
                                                               "label): the pool the run's measurements go to")
    device_timeout_s: float = Field(default=900.0, gt=0, description="one measurement job's time limit on a board; "
                                                                     "past it the board leaves the pool")
    board_tolerance: float = Field(default=0.25, gt=0, description="two boards of the target whose p50s of the same "
                                                                   "model differ by more than this fraction are "
                                                                   "reported")
    device_token_file: Path | None = Field(default=None, description="file with the agent's bearer token "
                                                                    "(else EDGEKD_AGENT_TOKEN)")
    precisions: list[Literal["fp32", "int8", "int8-qat"]] = Field(
        default=["fp32"], description="precisions searched, e.g. fp32,int8,int8-qat: int8 quantizes the trained "
                                      "student after training, int8-qat fine-tunes it with fake quantization while "
                                      "still distilling (--qat-epochs); each scored by its measured INT8 latency and "
                                      "its accuracy as quantized, and kept only when measured faster than FP32")
    qat_epochs: int = Field(default=2, ge=1, le=100, description="quantization-aware fine-tuning epochs of an "
                                                                  "int8-qat student (at a tenth of --lr)")
    # distillation
    kd: list[str] = Field(default=["response"], description="KD terms NAME[:WEIGHT],...: response, feature, "
                                                            "relation, multi-teacher, semi-supervised, robust; "
                                                            "segmentation: response (per pixel), cwd (channel-wise), "
                                                            "feature, robust, multi-teacher (default there: "
                                                            "response,cwd:3); detection: head (default), "
                                                            "pseudo-box, feature, ld (GFL-style heads: "
                                                            "--det-head gfl)")
    teachers: list[str] = Field(default=[], description="more teachers for --kd multi-teacher (repeatable; "
                                                       "the same sources as --teacher)")
    teacher_weights: list[float] = []
    unlabeled: Path | None = Field(default=None, description="folder of unlabelled images for --kd semi-supervised")
    teacher_views: int = Field(default=1, ge=1, le=8, description="dihedral views (rotations/flips) of each training "
                                                                  "image whose teacher outputs are cached, 1..8")
    feature_pairs: list[tuple[int, int]] | list[tuple[str, str]] | None = Field(
        default=None, description="feature KD pairs STUDENT=TEACHER,...: stage indices (0=1,1=3) or module names "
                                  "(blocks.3=layer3); default: each student stage with the teacher stage at the "
                                  "nearest relative depth")
    robust_rho: float = Field(default=0.5, gt=0, le=1)
    feature_distance: Literal["mse", "l1", "cosine", "cwd"] = Field(
        default="mse", description="distance of the feature KD term: mse, l1 (feature-importance preservation), "
                                   "cosine, or cwd (channel-wise: each channel's softmax over positions at "
                                   "--temperature, KL to the teacher's; detectors' neck levels)")
    feature_importance: Literal["none", "attention", "boxes"] = Field(
        default="none", description="weight the feature KD term by the teacher's attention map (attention "
                                    "transfer): the student is pushed hardest where the teacher's features matter; "
                                    "detection: boxes (FGD's split: the objects' positions weigh as much as the "
                                    "background)")
    kd_weighting: Literal["none", "entropy", "disagreement"] = Field(
        default="none", description="dynamic distillation: weight each sample's soft-target loss by the teacher's "
                                    "entropy or the teacher-student disagreement (batch mean 1)")
    # search
    search: Literal["grid", "tpe", "nsga2"] = Field(
        default="grid", description="grid (the configured candidates), tpe (Optuna TPE on J) or nsga2 "
                                    "(accuracy vs p90)")
    trials: int = Field(default=16, ge=1, description="proposals of a tpe/nsga2 search")
    bracket_size: int = Field(default=8, ge=1)
    rungs: int = Field(default=3, ge=1, le=6)
    eta: int = Field(default=2, ge=2)
    screen: bool = Field(default=True, description="screen proposals before training; --no-screen trains "
                                                  "every proposal, even those far over the budget")
    screen_slack: float = Field(default=1.5, gt=0, description="drop proposals whose screened p90 > slack x budget")
    max_minutes: float | None = Field(default=None, gt=0, description="stop proposing and training after this "
                                                                    "long; select among what finished")
    search_space: SearchSpace = SearchSpace()
    # exports of the selected student, each checked against PyTorch
    export_formats: list[str] | None = Field(
        default=None, description="formats of the selected student, see `edgekd export --help` (default: what the "
                                  "target runs: onnx, plus openvino where the target has OpenVINO and a TensorRT "
                                  "engine where TensorRT runs here; for a board the engine is built on the board)")
    calibration_size: int = Field(default=300, ge=1, description="INT8 calibration images")
    max_accuracy_drop: float | None = Field(default=None, gt=0, lt=1, description="accuracy-controlled INT8")
    parity: dict[str, ParityTolerance] = Field(default_factory=lambda: dict(DEFAULT_TOLERANCES),
                                               description="tolerance per precision: fp32, fp16, int8")
    quiet: bool = Field(default=False, description="no progress bars or tables; errors only")
    baseline: bool = Field(default=True, description="train the selected architecture once more without KD "
                                                     "(same epochs, data order, start) and report both accuracies: "
                                                     "what KD added")

    @property
    def stage_pairs(self) -> list[tuple[int, int]] | None:
        """feature_pairs by stage index, or None (default pairing, or pairs by module name)."""
        if not self.feature_pairs or self.feature_modules is not None:
            return None
        return [(int(s), int(t)) for s, t in self.feature_pairs]

    @property
    def feature_modules(self) -> tuple[list[str], list[str]] | None:
        """(student modules, teacher modules) when feature_pairs name modules; None for stage indices."""
        if not self.feature_pairs or not isinstance(self.feature_pairs[0][0], str):
            return None
        return [str(s) for s, _ in self.feature_pairs], [str(t) for _, t in self.feature_pairs]

    @field_validator("budget_ms")
    @classmethod
    def _positive_budget(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be a positive number of milliseconds, e.g. --budget-ms 20")
        return v

    @field_validator("device_url", mode="before")
    @classmethod
    def _http_url(cls, v: Any) -> Any:
        from .agent.protocol import is_agent_url

        urls = [v] if isinstance(v, str) else v
        for u in urls or []:
            if not isinstance(u, str) or not is_agent_url(u):
                raise ValueError(f"{u!r} must be an http(s) URL of `edgekd agent`, e.g. http://BOARD:8765")
        return urls or None

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
        "baseline": False,
        "speedup": 1.5,  # the smoke teacher is small: 5x would put every smoke student over the budget
    },
}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} cannot be read as YAML ({exc.__class__.__name__}); fix its "
                          "syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_") if k != "lambda" else k: v for k, v in raw.items()}


class Overrides(BaseModel):
    """Values given on the command line; None means not given (the YAML file or the preset
    decides). Names are RunConfig's; comma-separated lists are split here."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    preset: str | None = None
    target: str | None = None
    data: Path | None = None
    task: str | None = None
    mask_palette: Path | None = None
    tile: int | None = None
    tile_overlap: int | None = None
    teacher: str | None = None
    teacher_weights_file: Path | None = None
    teacher_normalization: str | None = None
    out: Path | None = None
    overwrite: bool | None = None
    seed: int | None = None
    budget_ms: float | None = None
    speedup: float | None = None
    lambda_: float | None = Field(default=None, alias="lambda")
    gamma: float | None = None
    delta: float | None = None
    threads: int | None = None
    train_threads: int | None = None
    interleave: bool | None = None
    teacher_epochs: int | None = None
    student_epochs: int | None = None
    image_size: int | None = None
    energy_meter: str | None = None
    no_cache: bool | None = None
    device_url: list[str] | None = None
    workers: int | None = None
    ray_address: str | None = None
    data_parallel: int | None = None
    devices_file: Path | None = None
    device_timeout_s: float | None = None
    device_token_file: Path | None = None
    precisions: list[str] | None = None
    bands: list[str] | None = None
    split_file: Path | None = None
    augmentations: list[str] | None = None
    teacher_bands: list[str] | None = None
    student_bands: list[str] | None = None
    qat_epochs: int | None = None
    export_formats: list[str] | None = None
    kd: list[str] | None = None
    teachers: list[str] | None = None
    students: list[str] | None = None
    student_weights_dir: Path | None = None
    unlabeled: Path | None = None
    teacher_views: int | None = None
    feature_distance: str | None = None
    feature_importance: str | None = None
    det_head: str | None = None
    kd_weighting: str | None = None
    feature_pairs: list[tuple[int, int]] | list[tuple[str, str]] | None = None
    search: str | None = None
    trials: int | None = None
    max_minutes: float | None = None
    screen: bool | None = None
    baseline: bool | None = None
    quiet: bool | None = None

    @field_validator("precisions", "export_formats", "kd", "students", "bands", "teacher_bands", "student_bands",
                     "augmentations", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("feature_pairs", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        """"0=1,1=3" or "blocks.3=layer3,...": STUDENT=TEACHER pairs, indices when both are numbers."""
        if not isinstance(v, str):
            return v
        pairs = []
        for item in filter(None, (p.strip() for p in v.split(","))):
            s, eq, t = item.partition("=")
            if not eq or not s.strip() or not t.strip():
                raise ValueError(f"{item!r} is not STUDENT=TEACHER; write e.g. 0=1,1=3 or blocks.3=layer3")
            pairs.append((s.strip(), t.strip()))
        if pairs and all(s.isdigit() and t.isdigit() for s, t in pairs):
            return [(int(s), int(t)) for s, t in pairs]
        return pairs

    @field_validator("teachers", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, by_alias=True)


def build_config(flags: Overrides | dict[str, Any], config_file: Path | None = None) -> RunConfig:
    """Merge preset < YAML < flags (flags that are None were not given) into a RunConfig."""
    from_file = _read_yaml(config_file) if config_file else {}
    given = flags.given() if isinstance(flags, Overrides) else {k: v for k, v in flags.items() if v is not None}
    preset = given.get("preset") or from_file.get("preset") or "default"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    merged = {**PRESETS[preset], **from_file, **given, "preset": preset}
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            keys = [f.alias or k for k, f in RunConfig.model_fields.items()]
            raise ConfigError(f"unknown option {where!r} in the configuration; {close_matches(where, keys)}"
                              "the keys are RunConfig's (see edgekd/config.py)") from None
        raise _invalid(err) from None


# RunConfig fields whose flag is not their name with dashes
FLAGS = {"device_timeout_s": "--device-timeout", "teacher_weights_file": "--teacher-weights", "split_file": "--split",
         "devices_file": "--devices", "teachers": "--teacher-extra", "lambda_": "--lambda"}


def _invalid(err: Any) -> ConfigError:
    """One line naming the flag (or YAML key), the value and what it should be; no validator
    internals (locations like `precisions.0`, "Value error, ...")."""
    loc = [str(p) for p in err["loc"]] or ["config"]
    flag = FLAGS.get(loc[0], "--" + loc[0].replace("_", "-").rstrip("-"))
    what = f"{flag} (YAML key {'.'.join(loc)})" if len(loc) > 1 and not loc[1].isdigit() else flag
    value = f" {err['input']!r}" if isinstance(err.get("input"), (str, int, float)) else ""
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return ConfigError(f"invalid value{value} for {what}: {msg[0].lower() + msg[1:]}")


def parse_flags(given: dict[str, Any]) -> Overrides:
    """Command-line values into Overrides; a malformed one is a ConfigError naming its flag."""
    try:
        return Overrides.model_validate(given)
    except ValidationError as exc:
        raise _invalid(exc.errors()[0]) from None
