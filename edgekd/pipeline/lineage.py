"""What an incremental update reads from the run it continues: the selected student, its
classes, the teacher, the settings, and the data of every earlier step (the lineage), from an
`edgekd optimize` run directory (report.json, config.yaml) or an `edgekd update` one
(update.json). Also the data an update trains on: the new images and a replay sample of the
old ones, under one class list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel

from ..config import RunConfig
from ..data import Dataset, dataset_from_source
from ..data.dataset import class_labels
from ..data.store import stack, take
from ..errors import DataError, EdgeKDError, RunDirError
from ..models.io import Net, load_checkpoint

UPDATE_RECORD = "update.json"


class Settings(BaseModel):
    """The settings of the earlier run that an update keeps unless told otherwise."""

    kd: list[str] = ["response"]
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    seed: int = 0
    val_fraction: float = 0.2
    batch_size: int = 64
    lr: float = 3e-3
    student_epochs: int = 8
    teacher_epochs: int = 10
    calibration_size: int = 300
    target: str = "cpu"
    budget_ms: float | None = None
    export_formats: list[str] | None = None


class Source(BaseModel):
    """One step's data: how to load it again (edgekd.data.data_source) and its classes."""

    data_source: dict[str, Any]
    classes: list[str]


class Previous(BaseModel):
    """The run an update continues."""

    model_config = {"arbitrary_types_allowed": True}

    run_dir: Path
    kind: str  # "optimize" or "update"
    student_name: str
    checkpoint: Path
    precision: str
    classes: list[str]
    bands: list[str]
    image_size: int
    teacher: Path | None  # the run's teacher checkpoint, when it has one
    settings: Settings
    lineage: list[Source]

    def load_student(self) -> Net:
        model, _ = load_checkpoint(self.checkpoint)
        return model


def _not_a_run(run_dir: Path, why: str) -> RunDirError:
    return RunDirError(f"{run_dir} {why}: pass the run directory of a finished edgekd optimize or edgekd update run "
                       f"(a stopped optimize run: finish it first with edgekd optimize --resume {run_dir})")


def read_previous(run_dir: Path) -> Previous:
    """The earlier run; a RunDirError naming the fix when it has no selected student."""
    if not run_dir.is_dir():
        raise _not_a_run(run_dir, "is not a folder")
    if (run_dir / UPDATE_RECORD).is_file():
        return _from_update(run_dir)
    if not (run_dir / "report.json").is_file():
        raise _not_a_run(run_dir, "holds no report.json, so no selected student")
    try:
        report = json.loads((run_dir / "report.json").read_text())
        cfg = RunConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
        cand = next(c for c in report["candidates"] if c["name"] == report["selected"])
        arch_name = cand["checkpoint"].split("/")[1]
    except (OSError, ValueError, KeyError, IndexError, StopIteration, TypeError) as exc:
        raise _not_a_run(run_dir, f"has no readable selected student ({type(exc).__name__})") from None
    ckpt = run_dir / "candidates" / arch_name / "student.pt"
    if not ckpt.is_file():
        raise _not_a_run(run_dir, f"lacks the selected student's checkpoint {ckpt}")
    _, meta = load_checkpoint(ckpt)
    settings = Settings(kd=cfg.kd, kd_alpha=cfg.kd_alpha, kd_temperature=cfg.kd_temperature, seed=cfg.seed,
                        val_fraction=cfg.val_fraction, batch_size=cfg.batch_size, lr=cfg.lr,
                        student_epochs=cfg.student_epochs, teacher_epochs=cfg.teacher_epochs,
                        calibration_size=cfg.calibration_size, target=report["target"]["name"],
                        budget_ms=report["budget_ms"], export_formats=cfg.export_formats)
    teacher = run_dir / "teacher.pt"
    return Previous(run_dir=run_dir, kind="optimize", student_name=report["selected"], checkpoint=ckpt,
                    precision=cand.get("precision", "fp32"), classes=meta["classes"], bands=meta["bands"],
                    image_size=meta["image_size"], teacher=teacher if teacher.is_file() else None, settings=settings,
                    lineage=[Source(data_source=meta.get("data_source") or {}, classes=meta["classes"])])


def _from_update(run_dir: Path) -> Previous:
    try:
        rec = json.loads((run_dir / UPDATE_RECORD).read_text())
        s = rec["student"]
        ckpt = run_dir / s["checkpoint"]
        teacher = run_dir / "teacher.pt"
        return Previous(run_dir=run_dir, kind="update", student_name=s["name"], checkpoint=ckpt,
                        precision=s.get("precision", "fp32"), classes=rec["classes"], bands=rec["bands"],
                        image_size=rec["image_size"], teacher=teacher if teacher.is_file() else None,
                        settings=Settings.model_validate(rec["settings"]),
                        lineage=[Source.model_validate(x) for x in rec["lineage"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _not_a_run(run_dir, f"has a damaged {UPDATE_RECORD} ({type(exc).__name__})") from None


def union_classes(old: list[str], new: list[str]) -> list[str]:
    """The old classes in their order, then the classes only the new data has."""
    return list(old) + [c for c in new if c not in old]


def relabel(y: torch.Tensor, classes: list[str], into: list[str]) -> torch.Tensor:
    """Labels indexing `classes` as labels indexing `into` (which holds every one of them)."""
    table = torch.tensor([into.index(c) for c in classes], dtype=torch.long)
    return table[y]


def _same_folder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a.get("data")) and a.get("data") == b.get("data")


def old_data(lineage: list[Source], new_source: dict[str, Any], image_size: int, classes: list[str]
             ) -> tuple[list[Dataset], list[str]]:
    """The earlier steps' data sets still reachable (labels in `classes`), and a note per step
    that is not."""
    found, notes = [], []
    for src in lineage:
        where = src.data_source.get("data") or "the synthetic demo set"
        if not src.data_source or _same_folder(src.data_source, new_source):
            continue
        if src.data_source.get("data") and not Path(src.data_source["data"]).is_dir():
            notes.append(f"{where} is no longer reachable: no replay from it")
            continue
        try:
            ds = dataset_from_source({**src.data_source, "image_size": image_size})
        except EdgeKDError as exc:
            notes.append(f"{where} could not be read ({exc}): no replay from it")
            continue
        ds.y_train = relabel(class_labels(ds.y_train), ds.classes, classes)
        ds.y_val = relabel(class_labels(ds.y_val), ds.classes, classes)
        found.append(ds)
    return found, notes


def merge(new: Dataset, old: list[Dataset], classes: list[str], replay_fraction: float, seed: int
          ) -> tuple[Dataset, int]:
    """The update's data set: every new training image plus a random replay sample of the old
    training images (replay_fraction x the new images, at most all of them); validation: the new
    and the old validation images. Labels index `classes`. Returns it and the replay count."""
    if old and any(o.in_channels != new.in_channels for o in old):
        raise DataError(f"the new data has {new.in_channels} bands, earlier data "
                        f"{sorted({o.in_channels for o in old})}: an update keeps the bands of the student")
    y_new = relabel(class_labels(new.y_train), new.classes, classes)
    x_old = stack([o.x_train for o in old]) if old else take(new.x_train, np.arange(0))
    y_old = torch.cat([class_labels(o.y_train) for o in old]) if old else y_new[:0]
    n = min(len(x_old), round(replay_fraction * len(y_new)))
    pick = np.sort(np.random.default_rng(seed).permutation(len(x_old))[:n]).astype(np.int64)
    return Dataset(  # images served from the image cache stay there: nothing materialised
        name=new.name + (f" + replay of {', '.join(o.name for o in old)}" if n else ""), classes=classes,
        bands=new.bands, x_train=stack([new.x_train, take(x_old, pick)]),
        y_train=torch.cat([y_new, y_old[torch.from_numpy(pick)]]),
        x_val=stack([new.x_val, *[o.x_val for o in old]]),
        y_val=torch.cat([relabel(class_labels(new.y_val), new.classes, classes),
                         *[class_labels(o.y_val) for o in old]]),
        synthetic=new.synthetic, source=new.source, skipped_files=new.skipped_files), n
