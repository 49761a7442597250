"""`Report`: the typed record behind report.json. The renderers (Markdown, HTML, plots) read its
attributes; the shipped JSON Schema (report.schema.json) is generated from it by
`python -m edgekd.report.schema`.

Every path in a report is relative to the run directory, so a run directory can be moved,
archived or read from anywhere."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..export.base import ExportResult
from ..metrics import ClassMetrics, SegmentationMetrics
from ..models.arch import ArchSpec
from ..profilers.measurement import Measurement
from ..search.candidates import Candidate, TrialSummary
from ..search.precision import PrecisionChoice
from ..targets import Target

# 2: trial states are an enum with a separate detail; paths are relative to the run directory
SCHEMA_VERSION = 2


class BoardRecord(BaseModel):
    """One board of a pool: what it did, or why it left the pool."""

    board: str
    url: str
    target: str | None = None
    state: Literal["ready", "out"]
    why: str | None = None
    jobs: int = 0
    seconds: float = 0.0


class BoardDisagreement(BaseModel):
    """The same model measured on two boards of the target, p50s further apart than the tolerance."""

    model: str
    boards: list[str]
    p50_ms: list[float]
    ratio: float
    tolerance: float


class MeasurementMode(BaseModel):
    """Where every figure of the run came from."""

    mode: Literal["measured", "remote", "predicted"]
    runtime: str
    how: str
    boards: list[BoardRecord] = []  # a pool of boards: each board, its jobs, or why it left
    disagreements: list[BoardDisagreement] = []
    notes: list[str] = []


class Parallelism(BaseModel):
    """How many processes trained and how many boards measured."""

    training_workers: int = 1
    boards: int = 0  # boards that measured (0: this machine, or predicted)


class KDTermWeight(BaseModel):
    name: str
    weight: float


class KDSummary(BaseModel):
    terms: list[KDTermWeight]
    alpha: float
    temperature: float
    teacher_views: int
    weighting: str = "none"  # dynamic distillation: per-sample lambda(x) of the soft-target terms
    feature_distance: str = "mse"
    feature_importance: str = "none"
    det_head: str | None = None  # detection: the box head of the detectors edgekd built (fcos, gfl)


class ObjectiveSummary(BaseModel):
    """J's weights, budget reference and form, as the run used them."""

    model_config = ConfigDict(populate_by_name=True)

    lambda_: float = Field(alias="lambda")
    gamma: float
    delta: float
    delta_unit: str = "per mJ per inference"
    weights: dict[str, float]
    reference: str = "teacher measured on the same target and runtime"
    latency_statistic: str = "p50 in C_hw; p90 in the real-time penalty"
    penalty: str = "indicator: gamma * 1[p90 > budget_ms]"
    kd: KDSummary


class DatasetSizes(BaseModel):
    train: int
    val: int
    test: int | None = None  # the user's held-out test split, when given


class DatasetSummary(BaseModel):
    name: str
    synthetic: bool
    source: str
    classes: list[str]
    bands: list[str]
    image_size: int
    sizes: DatasetSizes
    skipped_files: list[str] = []
    split: str = ""  # how train / validation (/ test) were formed
    band_scale: list[float] | None = None  # per band: raw value / scale = model input (GeoTIFF folders)
    band_note: str = ""  # how the bands were read and scaled
    subsampled: str | None = None  # how a preset cut the user's data down (e.g. smoke), or None
    task: str = "classification"  # what a label is: a class per image, or a mask (segmentation)
    ignore_index: int | None = None  # segmentation: the mask value of unlabelled pixels


class TeacherSummary(BaseModel):
    name: str  # an EdgeNet's architecture, or the source: timm:NAME, torchvision:NAME, onnx:FILE, ...
    arch: ArchSpec | None = None  # EdgeNet teachers only
    origin: str  # trained by this run / given: ... / fine-tuned from ... / resumed ...
    params: int | None  # None: an ONNX teacher (no PyTorch parameters to count)
    macs: int | None
    checkpoint: str | None  # relative to the run directory; None for an ONNX teacher
    val_accuracy: float = Field(ge=0, le=1)
    val_cross_entropy: float
    train_loss: list[float] = []
    measurement: Measurement
    bands: list[str] = []  # the bands the teacher sees (cross-modal KD: other than the students')


class TrainingSummary(BaseModel):
    epochs_teacher: int
    epochs_student: int
    batch_size: int
    lr: float
    seed: int
    torch_threads: int
    teacher_outputs: str


class Baseline(BaseModel):
    """The selected architecture trained once more without KD (cross-entropy only, the same
    epochs, data order, optimiser and start): what distillation added."""

    name: str
    epochs: int
    kd_accuracy: float = Field(ge=0, le=1)  # the selected student, with the run's KD terms
    no_kd_accuracy: float = Field(ge=0, le=1)
    kd_gain_points: float  # 100 x (kd - no_kd)
    train_seconds: float


class ScreenSettings(BaseModel):
    on: bool
    slack: float


class SearchSummary(BaseModel):
    mode: str
    rung_epochs: list[int]
    eta: int
    proposals: int
    screened_out: int
    screen: ScreenSettings
    train_seconds_total: float
    train_seconds_on_over_budget_students: float


class ModelMetrics(BaseModel):
    """Per-class figures of one model: on the validation split (what selection used) and, when
    the data has a held-out test split, on it (evaluated once, at the end, never used to select)."""

    model: str  # "teacher" or the selected student's name
    validation: ClassMetrics
    test: ClassMetrics | None = None


class SceneCost(BaseModel):
    """What a whole scene costs on the target (segmentation): the p50 of one tile per new pixel."""

    tile: int  # px of source imagery per tile (--tile, else the model's input size)
    overlap: int
    basis: str  # what a megapixel is of: source imagery (tiled) or the model's input
    teacher_ms_per_mp: float
    student_ms_per_mp: float
    source: str  # the latency figures' source (measured / remote / predicted / cached)


class DenseModelMetrics(BaseModel):
    """Per-class IoU of one segmenter on the validation split and, when given, the test split."""

    model: str  # "teacher" or the selected student's name
    validation: SegmentationMetrics
    test: SegmentationMetrics | None = None


class DetectionFigures(BaseModel):
    """COCO figures of one detector on a split (pycocotools): AP over IoU 0.5:0.95 and at 0.5 and
    0.75, by object size (-1: no object of that size), AP50 per class."""

    split: str
    n: int  # images
    map50: float
    map: float
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    per_class_ap50: dict[str, float]


class DetectionModelMetrics(BaseModel):
    """COCO figures of the teacher or the selected student on the validation (and test) split."""

    model: str
    validation: DetectionFigures
    test: DetectionFigures | None = None


class StageTimes(BaseModel):
    """End-to-end latency of the deployed detector at batch 1, stage by stage (p50 per slice, ms):
    pre-processing (letterbox of the slice to the input), the network (the exported graph without
    decoding), decoding + NMS (the in-graph NMS export minus the network alone); a camera frame
    is `slices` x (pre-processing + network + decoding and NMS) + the merge of the slices."""

    source: str  # measured, and how
    runtime: str
    threads: int
    runs: int
    frame: str  # the camera frame's size, and how it is cut (slices) or letterboxed
    preprocess_ms: float
    network_ms: float
    postprocess_ms: float
    slices: int = 1  # per camera frame (tiling): the whole frame = slices x per-slice + merge
    merge_ms: float = 0.0
    frame_ms: float  # one camera frame end to end
    fps: float  # camera frames per second at that rate


class DetectionSummary(BaseModel):
    """What a detection run adds: the COCO figures, the deployable export with NMS inside, its
    agreement with PyTorch, the end-to-end stage times, the drawings."""

    figures: list[DetectionModelMetrics] = []
    nms_export: str | None = None  # the ONNX graph with decoding and NMS inside (outputs boxes, scores, labels)
    nms_agreement: str = ""  # how its detections agree with PyTorch's decoding and NMS
    nms_openvino: str | None = None  # the same graph as OpenVINO IR (with --formats openvino)
    nms_openvino_agreement: str = ""  # its detections against PyTorch's, or why there is none
    stages: StageTimes | None = None
    drawings: list[str] = []  # PNGs: validation images with truth, teacher and student boxes
    calibration: str = ""  # how the INT8 calibration images were chosen (objects of every class)


class Report(BaseModel):
    """report.json (schema_version 2). Every measured figure carries its source and conditions."""

    model_config = ConfigDict(title="edgekd optimize report", populate_by_name=True,
                              json_schema_serialization_defaults_required=True)

    schema_version: Literal[2] = 2
    run_id: str
    created: str
    command: str
    resumed: bool = False
    target: Target
    budget_ms: float = Field(gt=0)
    budget_source: str
    measurement: MeasurementMode
    objective: ObjectiveSummary
    dataset: DatasetSummary
    teacher: TeacherSummary
    training: TrainingSummary
    search: SearchSummary
    candidates: list[Candidate] = Field(min_length=1)
    trials: list[TrialSummary]
    pareto_front: list[str]
    selected: str
    selection_reason: str
    # per student with a lower precision searched: each precision's measured latency and accuracy,
    # and why it was kept or dropped (kept only when measured faster than FP32)
    precisions: list[PrecisionChoice] = []
    per_class: list[ModelMetrics] = []  # the teacher and the selected student (classification)
    # the task (edgekd.tasks) and the metric every "accuracy" figure of this report is in: top-1
    # accuracy for classification, mIoU (over the classes present) for segmentation
    task: str = "classification"
    metric: str = "accuracy"
    per_class_iou: list[DenseModelMetrics] = []  # segmentation: the teacher and the selected student
    mask_overlays: list[str] = []  # segmentation: PNGs of validation tiles (image, truth, teacher, student)
    scene_cost: SceneCost | None = None  # segmentation: ms per megapixel of a whole scene
    # tiled segmentation: the teacher and the selected student on whole validation scenes (sliding window)
    scenes: list[DenseModelMetrics] = []
    detection: DetectionSummary | None = None  # detection: COCO figures, the NMS export, stage times
    baseline: Baseline | None = None  # --baseline: the selected architecture without KD
    exports: list[ExportResult]
    software: dict[str, str]
    stage_seconds: dict[str, float]
    parallelism: Parallelism = Parallelism()
    config: dict[str, Any]

    @property
    def best(self) -> Candidate:
        """The selected candidate."""
        return next(c for c in self.candidates if c.name == self.selected)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)
