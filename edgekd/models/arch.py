"""What a student is: `ArchSpec`, one member of the elastic EdgeNet family (width, depth per
stage, expansion, kernel, resolution), beside the family that builds it (edgekd.models.family);
or `TimmSpec`, a standard model from timm at a resolution. `StudentSpec` is either, told apart
by `family` (records written before timm students existed have none: EdgeNet)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator


class ArchSpec(BaseModel):
    """One member of the student/teacher family (see edgekd.models.family)."""

    model_config = ConfigDict(frozen=True)

    family: Literal["edgenet"] = "edgenet"
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


class TimmSpec(BaseModel):
    """A standard student from timm (MobileNetV3, EfficientNet-Lite, ResNet, MobileViT, ...),
    started from pretrained weights where they are available here."""

    model_config = ConfigDict(frozen=True)

    family: Literal["timm"] = "timm"
    model: str = Field(description="timm model name, e.g. mobilenetv3_small_075")
    resolution: int | None = Field(default=None, ge=8, le=1024,
                                   description="input resolution the network runs at (resized inside)")

    @property
    def name(self) -> str:
        return f"timm-{self.model}" + (f"-r{self.resolution}" if self.resolution else "")


class TorchvisionSpec(BaseModel):
    """A torchvision student: a segmenter (LRASPP-MobileNetV3) built for the data's bands and
    classes, or a detector (SSDLite-MobileNetV3) for the data's classes; from scratch (no
    torchvision weights are here offline) unless --student-weights-dir holds its .pth."""

    model_config = ConfigDict(frozen=True)

    family: Literal["torchvision"] = "torchvision"
    model: str = Field(description="torchvision model name, e.g. lraspp_mobilenet_v3_large")
    resolution: int | None = Field(default=None, ge=8, le=1024,
                                   description="input resolution the network runs at (resized inside)")

    @property
    def name(self) -> str:
        return f"tv-{self.model}" + (f"-r{self.resolution}" if self.resolution else "")


class FromTeacherSpec(BaseModel):
    """A student cut from the teacher (edgekd.models.shrink): the teacher's weights without the
    least important `drop` share of its residual blocks, with about `keep` of each layer's
    channels (ranked by `importance`), run at `resolution`."""

    model_config = ConfigDict(frozen=True)

    family: Literal["from-teacher"] = "from-teacher"
    keep: float = Field(gt=0, le=1, description="share of each layer's channels kept")
    drop: float = Field(default=0.0, ge=0, lt=1, description="share of the teacher's residual blocks dropped")
    importance: Literal["magnitude", "taylor", "activation"] = "taylor"
    resolution: int | None = Field(default=None, ge=8, le=1024,
                                   description="input resolution the network runs at (resized inside)")

    @property
    def name(self) -> str:
        return (f"teacher-k{self.keep:g}" + (f"-d{self.drop:g}" if self.drop else "")
                + (f"-r{self.resolution}" if self.resolution else ""))


# the shares of the teacher's channels --students from-teacher searches (measured on RSSCN7:
# benchmarks/results/from_teacher.md)
FROM_TEACHER_KEEPS = (0.5, 0.35, 0.25)
# the shares a grid search screens to find the least cut that meets the budget (it then trains
# that share and its neighbours on this ladder)
FROM_TEACHER_LADDER = (0.85, 0.75, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25, 0.2, 0.15)
# the shares of its residual blocks a sampled search (tpe, nsga2) may drop
FROM_TEACHER_DROPS = (0.0, 0.25, 0.5)

ExternalSpec = TimmSpec | TorchvisionSpec | FromTeacherSpec  # a student not of the EdgeNet family


def _family(v: Any) -> str:
    return str(v.get("family", "edgenet") if isinstance(v, dict) else getattr(v, "family", "edgenet"))


StudentSpec = Annotated[Annotated[ArchSpec, Tag("edgenet")] | Annotated[TimmSpec, Tag("timm")]
                        | Annotated[TorchvisionSpec, Tag("torchvision")]
                        | Annotated[FromTeacherSpec, Tag("from-teacher")], Discriminator(_family)]


# Student families a user can name in --students: each is the standard mobile models of one
# family that timm builds (any other timm model is named exactly as timm:NAME).
STUDENT_FAMILIES: dict[str, tuple[str, ...]] = {
    "mobilenetv3": ("mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100",
                    "mobilenetv3_large_075", "mobilenetv3_large_100"),
    "efficientnet-lite": ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
    "resnet18": ("resnet18",),
    "mobilevit": ("mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100"),
    "efficientvit": ("efficientvit_m0", "efficientvit_m1", "efficientvit_m2"),
}
# Students from torchvision, by the short name --students takes: a segmenter and a detector
TORCHVISION_STUDENTS = {"lraspp": "lraspp_mobilenet_v3_large", "ssdlite": "ssdlite320_mobilenet_v3_large"}
# torchvision's detectors edgekd searches as students (their own losses, NMS and graph)
TORCHVISION_DET_STUDENTS = ("ssdlite320_mobilenet_v3_large",)


def expand_students(items: list[str]) -> list[str]:
    """`--students` entries with family names replaced by their models: edgenet and timm:NAME,
    in order, each once."""
    out: list[str] = []
    for item in items:
        if item in STUDENT_FAMILIES:
            out += [f"timm:{m}" for m in STUDENT_FAMILIES[item]]
        elif item in TORCHVISION_STUDENTS:
            out.append(f"torchvision:{TORCHVISION_STUDENTS[item]}")
        elif item in ("edgenet", "from-teacher") or item.startswith(("timm:", "torchvision:")):
            out.append(item)
        else:
            from ..errors import ConfigError
            from ..registry import close_matches

            known = ["edgenet", "from-teacher", *TORCHVISION_STUDENTS, *STUDENT_FAMILIES]
            raise ConfigError(f"--students {item!r}: write edgenet, from-teacher, a family "
                              f"({', '.join(STUDENT_FAMILIES)}), timm:NAME, (segmentation) lraspp or (detection) "
                              f"ssdlite; {close_matches(item, known)}e.g. "
                              "--students edgenet,mobilenetv3,timm:efficientnet_lite0")
    return list(dict.fromkeys(out))


def torchvision_students(items: list[str]) -> list[TorchvisionSpec]:
    """The torchvision models among `--students` (segmenters or detectors)."""
    return [s for s in parse_students(items)[1] if isinstance(s, TorchvisionSpec)]


def parse_students(items: list[str]) -> tuple[bool, list[ExternalSpec]]:
    """`--students edgenet,from-teacher,FAMILY,timm:NAME,lraspp,ssdlite,...` -> (EdgeNet in the search?, the others)."""
    students = expand_students(items)
    others: list[ExternalSpec] = []
    for s in students:
        if s == "from-teacher":
            others += [FromTeacherSpec(keep=k) for k in FROM_TEACHER_KEEPS]
        elif s.startswith("torchvision:"):
            others.append(TorchvisionSpec(model=s.removeprefix("torchvision:")))
        elif s != "edgenet":
            others.append(TimmSpec(model=s.removeprefix("timm:")))
    return "edgenet" in students, others
