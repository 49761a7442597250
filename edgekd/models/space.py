"""The search space of the elastic family (which widths, depths, kernels, expansions,
resolutions and precisions a search may propose) and how a sampler draws from it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from .arch import (
    FROM_TEACHER_DROPS,
    FROM_TEACHER_KEEPS,
    ArchSpec,
    ExternalSpec,
    FromTeacherSpec,
    TimmSpec,
    TorchvisionSpec,
)


class SearchSpace(BaseModel):
    widths: list[float] = [0.25, 0.375, 0.5, 0.75, 1.0, 1.25]
    stage_depths: list[int] = [1, 2, 3]
    kernels: list[int] = [3, 5]
    expansions: list[int] = [2, 3, 4]
    resolutions: list[int | None] = Field(default=[None], description="None: the data's resolution")
    precisions: list[str] = ["fp32"]
    families: list[str] = Field(default=["edgenet"], description="edgenet and/or timm:NAME students (--students)")

    def sample(self, trial: Any) -> tuple[ArchSpec | ExternalSpec, str]:
        """Draw one (student, precision) with an Optuna trial (TPE or NSGA-II decide how)."""
        family = trial.suggest_categorical("family", self.families) if len(self.families) > 1 else self.families[0]
        if family == "from-teacher":
            res = trial.suggest_categorical("resolution", [r or 0 for r in self.resolutions])
            keep = trial.suggest_categorical("keep", list(FROM_TEACHER_KEEPS))
            drop = trial.suggest_categorical("drop", list(FROM_TEACHER_DROPS))
            cut = FromTeacherSpec(keep=keep, drop=drop, resolution=res or None)
            return cut, trial.suggest_categorical("precision", self.precisions)
        if family != "edgenet":
            res = trial.suggest_categorical("resolution", [r or 0 for r in self.resolutions])
            spec: ExternalSpec = (TorchvisionSpec(model=family.removeprefix("torchvision:"), resolution=res or None)
                                  if family.startswith("torchvision:")
                                  else TimmSpec(model=family.removeprefix("timm:"), resolution=res or None))
            return spec, trial.suggest_categorical("precision", self.precisions)
        depths = tuple(trial.suggest_categorical(f"depth{i}", self.stage_depths) for i in range(3))
        res = trial.suggest_categorical("resolution", [r or 0 for r in self.resolutions])
        arch = ArchSpec(width=trial.suggest_categorical("width", self.widths),
                        depths=depths if len(set(depths)) > 1 else None, depth=depths[0],
                        kernel=trial.suggest_categorical("kernel", self.kernels),
                        expansion=trial.suggest_categorical("expansion", self.expansions),
                        resolution=res or None)
        return arch, trial.suggest_categorical("precision", self.precisions)
