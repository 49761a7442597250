"""Candidate students: the search space of the family and the per-candidate record."""

from __future__ import annotations

from pydantic import BaseModel

from ..models.arch import ArchSpec
from ..profilers.measurement import Measurement
from .objective import HardwareCost


class Candidate(BaseModel):
    """One student: architecture, size, training outcome, measurement and score."""

    name: str
    precision: str = "fp32"
    arch: ArchSpec
    params: int
    macs: int
    checkpoint: str
    onnx: str
    val_accuracy: float
    val_kd_loss: float
    val_cross_entropy: float
    train_seconds: float
    train_loss: list[float]
    measurement: Measurement
    hardware_cost: HardwareCost
    c_hw: float
    penalty: float
    meets_budget: bool
    fits_memory: bool
    objective: float
    status: str = "finished"
    epochs: int | None = None

