"""ArchSpec: one member of the elastic EdgeNet family (width, depth per stage, expansion,
kernel, resolution), beside the family that builds it (edgekd.models.family)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ArchSpec(BaseModel):
    """One member of the student/teacher family (see edgekd.models.family)."""

    model_config = ConfigDict(frozen=True)

    width: float = Field(gt=0, le=8, description="channel width multiplier")
    depth: int = Field(default=1, ge=1, le=8, description="blocks per stage (when depths is not given)")
    depths: tuple[int, int, int] | None = Field(default=None, description="blocks in each of the 3 stages")
    expansion: int = Field(default=2, ge=1, le=8, description="inverted-residual expansion ratio")
    kernel: int = Field(default=3, description="depthwise kernel size")
    resolution: int | None = Field(default=None, ge=8, le=1024,
                                   description="input resolution the network runs at (resized inside)")

    @field_validator("depths")
    @classmethod
    def _depths_in_range(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if v is not None and not all(1 <= d <= 8 for d in v):
            raise ValueError("each stage depth must be 1..8")
        return v

    @property
    def stage_depths(self) -> tuple[int, int, int]:
        return self.depths or (self.depth,) * 3

    @field_validator("kernel")
    @classmethod
    def _odd_kernel(cls, v: int) -> int:
        if v not in (3, 5, 7):
            raise ValueError("kernel must be 3, 5 or 7")
        return v

    @property
    def name(self) -> str:
        d = "-".join(map(str, self.depths)) if self.depths and len(set(self.depths)) > 1 else str(self.stage_depths[0])
        return (f"w{self.width:g}-d{d}-e{self.expansion}-k{self.kernel}"
                + (f"-r{self.resolution}" if self.resolution else ""))
