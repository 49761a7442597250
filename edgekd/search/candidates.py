"""The search's records: what screening found, what each rung of training gave, the state of
every trial (an enum, with the human text kept apart), and the candidate students derived from
the trials that trained."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, computed_field

from ..models.arch import StudentSpec
from ..profilers.measurement import Measurement
from .objective import Costs, Score

QAT = "int8-qat"  # the quantization-aware INT8 version of a student (fine-tuned with fake quantization)
SENSORS = ("rapl", "nvml", "ina3221")  # energy meters that read hardware (see edgekd.profilers.energy)


def runtime_precision(precision: str) -> str:
    """The precision a runtime sees: a quantization-aware student runs as any INT8 model."""
    return "int8" if precision == QAT else precision


def costs_of(m: Measurement, delta: float) -> Costs:
    """The figures of `m` that enter J: p50 latency, peak memory, and energy when a sensor
    measured it or the user asked for energy (delta > 0). An estimate (power figure x latency)
    only restates latency with a target's constant, so unasked it would count latency twice
    and let its noise decide the pick: it is shown in the report but left out of C_hw."""
    sensed = m.energy_meter in SENSORS
    window = m.conditions.reference if m.conditions is not None else None
    return Costs(m.latency_ms.p50, m.peak_memory_mb, m.energy_mj if sensed or delta > 0 else None,
                 latency_ratio=window.ratio_p10 if window is not None else None)


class TrialStatus(str, Enum):
    """Where a trial stands (Optuna's TrialState idea); `TrialRecord.detail` says it in words."""

    PROPOSED = "proposed"  # proposed and, once screened, to be trained
    DUPLICATE = "duplicate"  # the same point as an earlier proposal, which did the work
    SCREENED_OUT = "screened_out"  # dropped before any training (latency or memory)
    STOPPED_AT_RUNG = "stopped_at_rung"  # successive halving stopped it after a rung
    OUT_OF_TIME = "out_of_time"  # --max-minutes ran out before it finished
    FINISHED = "finished"  # trained through the last rung
    SLOWER_THAN_FP32 = "slower_than_fp32"  # a lower precision measured no faster than FP32: not selectable


class Screen(BaseModel):
    """The cheap check before training: latency from a short run or the device model, memory fit."""

    passed: bool
    reason_kind: Literal["latency", "memory", "ok", "off"]  # which constraint failed, or none
    reason: str
    signal: str  # how latency was estimated: "measured (onnxruntime)", "predicted (tensorrt)", ...
    p90_ms: float
    peak_memory_mb: float | None


class RungOutcome(Score):
    """One rung of one trial: training so far, validation figures and the score J."""

    rung: int
    epochs: int  # cumulative epochs at the end of this rung
    train_seconds: float  # this rung's training of the architecture
    train_loss: list[float] = []  # per epoch of this rung
    start: str = ""  # how the student started: from scratch, or pretrained weights and their origin
    val_accuracy: float
    val_kd_loss: float
    val_cross_entropy: float
    onnx: str  # relative to the run directory


class RungResult(RungOutcome):
    measurement: Measurement


class TrialBase(BaseModel):
    name: str
    arch: StudentSpec
    precision: str
    bracket: int
    optuna_number: int | None = None
    screen: Screen | None = None
    status: TrialStatus = TrialStatus.PROPOSED
    detail: str = ""


class TrialRecord(TrialBase):
    """A proposal and everything that happened to it; the unit the search state file stores."""

    rungs: list[RungResult] = []

    @property
    def last(self) -> RungResult | None:
        return self.rungs[-1] if self.rungs else None

    def set(self, status: TrialStatus, detail: str = "") -> None:
        self.status, self.detail = status, detail

    def summary(self) -> TrialSummary:
        data = self.model_dump(exclude={"rungs": {"__all__": {"measurement"}}})
        return TrialSummary.model_validate(data)


class TrialSummary(TrialBase):
    """A trial as the report lists it: its rungs without their measurements (the candidates
    carry the measurement that counts)."""

    rungs: list[RungOutcome] = []


class CutSummary(BaseModel):
    """What cutting a student from the teacher removed (edgekd.models.shrink's plan, as replayed
    from the candidate's checkpoint)."""

    keep: float  # share of each layer's channels asked for
    importance: str  # the width ranking
    round_to: int
    drop_share: float = 0.0  # share of the droppable residual blocks asked to go
    depth_importance: str = "none"
    blocks_dropped: list[str] = []  # replaced by the identity
    layers_cut: int  # channel groups pruned (one per coupled group of layers)
    channels_kept: float  # output channels of the convolutions and linear layers, student / teacher
    resolution: int | None = None

    @classmethod
    def of(cls, model: Any) -> CutSummary:
        """The summary of a cut student (an ExternalNet of source kind from-teacher)."""
        from ..models.shrink import out_channels, teacher_structure

        plan, source = model.source["plan"], model.source
        kept, whole = out_channels(model), out_channels(teacher_structure(source["teacher"]))
        return cls(keep=plan["keep"], importance=plan["importance"], round_to=plan["round_to"],
                   drop_share=plan.get("drop_share", 0.0), depth_importance=plan.get("depth_importance", "none"),
                   blocks_dropped=list(plan.get("drop", [])), layers_cut=len(plan["cuts"]),
                   channels_kept=round(kept / max(whole, 1), 4), resolution=source.get("resolution"))


class Candidate(RungResult):
    """A student that completed at least one rung: its last rung, plus what the trial adds
    (name, size, status, the training of every rung)."""

    name: str
    precision: str = "fp32"
    arch: StudentSpec
    params: int
    macs: int
    checkpoint: str  # the last rung's checkpoint, relative to the run directory
    status: TrialStatus
    detail: str = ""
    cut: CutSummary | None = None  # a student cut from the teacher: what the cut removed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def c_hw(self) -> float:
        return self.hardware_cost.c_hw

    @classmethod
    def from_trial(cls, trial: TrialRecord, params: int, macs: int, cut: CutSummary | None = None) -> Candidate:
        last = trial.last
        if last is None:
            raise ValueError(f"trial {trial.name} has no completed rung")
        return cls(**last.model_dump(exclude={"train_seconds", "train_loss", "measurement"}),
                   measurement=last.measurement,
                   train_seconds=round(sum(r.train_seconds for r in trial.rungs), 3),
                   train_loss=[v for r in trial.rungs for v in r.train_loss],
                   name=trial.name, precision=trial.precision, arch=trial.arch, params=params, macs=macs,
                   checkpoint=f"candidates/{trial.arch.name}/rung{last.rung}{'.qat' * (trial.precision == QAT)}.pt",
                   status=trial.status,
                   detail=trial.detail, cut=cut)
