"""The in-memory data set record and the split shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .store import LAZY, Images, Labels


@dataclass
class Dataset:
    """Images as float32 NCHW tensors in [0, 1] (no normalisation: models carry their own)."""

    name: str
    classes: list[str]
    bands: list[str]
    x_train: Images  # a tensor, or an ImageArray served from the image cache (indexing gives tensors)
    y_train: Labels  # class indices (N,), or masks (N, H, W): a tensor, or a MaskArray served from the image cache
    x_val: Images
    y_val: Labels
    synthetic: bool
    source: str
    skipped_files: list[str] = field(default_factory=list)
    x_test: Images | None = None  # a held-out test split the user gave (train/val/test folders)
    y_test: Labels | None = None
    split: str = "drawn at random per class (val_fraction)"
    band_scale: list[float] | None = None  # per band: raw value / scale = model input (GeoTIFF folders)
    band_note: str = ""  # how the bands were read and scaled
    task: str = "classification"  # what a label is (edgekd.tasks): a class index, or a mask of class indices
    ignore_index: int | None = None  # segmentation: the mask value of pixels without a label
    val_scenes: list[tuple[str, str]] = field(default_factory=list)  # tiled segmentation: (image, mask) of val scenes
    frame_size: tuple[int, int] | None = None  # detection folders: the median source image (width, height)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split (what the models normalise with)."""
        if isinstance(self.x_train, LAZY):  # read in chunks, never all at once
            mean, std = self.x_train.channel_stats()
            std = std.clamp_min(1e-6)
        else:
            mean = self.x_train.mean(dim=(0, 2, 3))
            std = self.x_train.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "synthetic": self.synthetic,
            "source": self.source,
            "classes": self.classes,
            "bands": self.bands,
            "image_size": self.image_size,
            "sizes": {"train": int(len(self.y_train)), "val": int(len(self.y_val)),
                      **({"test": int(len(self.y_test))} if self.y_test is not None else {})},
            "split": self.split,
            "band_scale": self.band_scale,
            "band_note": self.band_note,
            "skipped_files": self.skipped_files,
            "task": self.task,
            "ignore_index": self.ignore_index,
        }


def class_labels(y: Labels) -> torch.Tensor:
    """Class indices of a classification data set (masks are refused: what needs this reads one
    class per image)."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        from ..errors import DataError

        raise DataError("this step works on one class per image; a segmentation data set (masks) is not supported "
                        "here yet")
    return y


def band_view(ds: Dataset, names: list[str], who: str) -> Dataset:
    """The same images and split with only the bands `names`, in that order (cross-modal KD:
    the teacher and the students see different bands of the same images)."""
    from ..errors import DataError

    missing = [n for n in names if n not in ds.bands]
    if missing:
        raise DataError(f"--{who}-bands {','.join(missing)}: the data has bands {', '.join(ds.bands)}; name some of "
                        "them, or all")
    idx = [ds.bands.index(n) for n in names]
    def pick(x: Images) -> Images:
        return x.view(bands=idx) if isinstance(x, LAZY) else x[:, idx].contiguous()

    return replace(ds, bands=list(names), x_train=pick(ds.x_train), x_val=pick(ds.x_val),
                   x_test=pick(ds.x_test) if ds.x_test is not None else None,
                   band_scale=[ds.band_scale[i] for i in idx] if ds.band_scale else None)


def stratified_split(
    y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and validation samples, the same fraction from every class."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train)), np.sort(np.array(val))


def make_dataset(
    name: str, classes: list[str], bands: list[str], x: np.ndarray, y: np.ndarray,
    val_fraction: float, seed: int, synthetic: bool, source: str, skipped: list[str] | None = None,
) -> Dataset:
    tr, va = stratified_split(y, val_fraction, seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    return Dataset(
        name=name, classes=classes, bands=bands,
        x_train=xt[tr], y_train=yt[tr], x_val=xt[va], y_val=yt[va],
        synthetic=synthetic, source=source, skipped_files=skipped or [],
    )


def data_source(data: Path | None, *, seed: int, val_fraction: float, image_size: int | None,
                samples_per_class: int, max_samples_per_class: int | None, bands: list[str] | None = None,
                split_file: Path | None = None, task: str = "classification",
                mask_palette: Path | None = None, tile: int | None = None, tile_overlap: int = 32) -> dict:
    """What `load_dataset` was called with, as plain values a checkpoint can carry."""
    return {"data": None if data is None else str(Path(data).resolve()), "seed": seed, "val_fraction": val_fraction,
            "image_size": image_size, "samples_per_class": samples_per_class,
            "max_samples_per_class": max_samples_per_class, "bands": bands,
            "split_file": None if split_file is None else str(Path(split_file).resolve()), "task": task,
            "mask_palette": None if mask_palette is None else str(Path(mask_palette).resolve()), "tile": tile,
            "tile_overlap": tile_overlap}


def dataset_from_source(source: dict, data: Path | None = None) -> Dataset:
    """The same data set (and split) a checkpoint was trained on; `data` overrides the folder."""
    kw = {k: source[k] for k in ("seed", "val_fraction", "image_size", "samples_per_class", "max_samples_per_class")}
    kw["bands"] = source.get("bands")
    kw["split_file"] = Path(source["split_file"]) if source.get("split_file") else None
    kw["task"] = source.get("task") or "classification"  # checkpoints written before tasks: classification
    kw["mask_palette"] = Path(source["mask_palette"]) if source.get("mask_palette") else None
    kw["tile"], kw["tile_overlap"] = source.get("tile"), source.get("tile_overlap", 32)
    folder = data if data is not None else (Path(source["data"]) if source.get("data") else None)
    return load_dataset(folder, **kw)


def load_dataset(
    data: Path | None, *, seed: int, val_fraction: float, image_size: int | None,
    samples_per_class: int, max_samples_per_class: int | None, min_classes: int = 2,
    bands: list[str] | None = None, split_file: Path | None = None, task: str = "classification",
    mask_palette: Path | None = None, tile: int | None = None, tile_overlap: int = 32,
) -> Dataset:
    """The demo set when `data` is None, else the image folder at `data` (with at least
    `min_classes` class folders; `split_file`: the user's train/val/test lists). `task` says
    what the labels are (edgekd.tasks): segmentation reads images/ + masks/ (or paints the demo
    set's masks)."""
    if task == "segmentation":
        return _load_segmentation(data, seed=seed, val_fraction=val_fraction, image_size=image_size,
                                  samples_per_class=samples_per_class, max_samples_per_class=max_samples_per_class,
                                  bands=bands, split_file=split_file, mask_palette=mask_palette, tile=tile,
                                  tile_overlap=tile_overlap)
    if task == "detection":
        return _load_detection(data, seed=seed, val_fraction=val_fraction, image_size=image_size,
                               samples_per_class=samples_per_class, max_samples_per_class=max_samples_per_class,
                               bands=bands, split_file=split_file, mask_palette=mask_palette, tile=tile,
                               tile_overlap=tile_overlap)
    if mask_palette is not None or tile is not None:
        from ..errors import DataError

        raise DataError("--mask-palette and --tile apply to a segmentation data set (and --tile to detection); leave "
                        f"them out for --task {task}")
    if data is None:
        from .synthetic import generate_demo

        if bands or split_file:
            from ..errors import DataError

            raise DataError("--bands and --split apply to an image folder (--data DIR), not the demo set")
        return generate_demo(
            samples_per_class=samples_per_class, image_size=image_size or 32,
            seed=seed, val_fraction=val_fraction,
        )
    from .folder import load_image_folder

    return load_image_folder(
        data, image_size=image_size or 64, seed=seed, val_fraction=val_fraction,
        max_per_class=max_samples_per_class, min_classes=min_classes, bands=bands, split_file=split_file,
    )


def _load_segmentation(data: Path | None, *, seed: int, val_fraction: float, image_size: int | None,
                       samples_per_class: int, max_samples_per_class: int | None, bands: list[str] | None,
                       split_file: Path | None, mask_palette: Path | None, tile: int | None = None,
                       tile_overlap: int = 32) -> Dataset:
    """The painted demo masks, or an images/ + masks/ folder (the cap: max_samples_per_class
    images per class, of the whole folder)."""
    from ..errors import DataError

    if data is None:
        if bands or split_file or mask_palette or tile:
            raise DataError("--bands, --split, --mask-palette and --tile apply to a data folder (--data DIR), not the "
                            "demo set")
        from .synthetic import generate_segmentation_demo

        return generate_segmentation_demo(samples_per_class=samples_per_class, image_size=image_size or 32, seed=seed,
                                          val_fraction=val_fraction)
    from .masks import is_mask_folder, load_mask_folder, read_classes

    root = Path(data)
    if not is_mask_folder(root):
        raise DataError(f"--task segmentation reads {root}/images and {root}/masks (same file names), which are not "
                        "both there; lay the data out so, or pick the task of the data (--task classification)")
    cap = None if max_samples_per_class is None else max_samples_per_class * len(read_classes(root).names)
    return load_mask_folder(root, image_size=image_size or 128, seed=seed, val_fraction=val_fraction,
                            max_images=cap, bands=bands, split_file=split_file, mask_palette=mask_palette,
                            tile=tile, tile_overlap=tile_overlap)


def _load_detection(data: Path | None, *, seed: int, val_fraction: float, image_size: int | None,
                    samples_per_class: int, max_samples_per_class: int | None, bands: list[str] | None,
                    split_file: Path | None, mask_palette: Path | None, tile: int | None = None,
                    tile_overlap: int = 32) -> Dataset:
    """The demo tiles with painted objects, or a COCO / YOLO folder (the cap: max_samples_per_class
    images per class, of the whole folder)."""
    from ..errors import DataError

    if mask_palette is not None:
        raise DataError("--mask-palette applies to segmentation masks; leave it out for --task detection")
    if bands:
        raise DataError("--bands: detection reads RGB images (and every band of GeoTIFFs); leave --bands out")
    if data is None:
        if split_file or tile:
            raise DataError("--split and --tile apply to a data folder (--data DIR), not the demo set")
        from .synthetic import generate_detection_demo

        return generate_detection_demo(samples_per_class=samples_per_class, image_size=image_size or 64, seed=seed,
                                       val_fraction=val_fraction)
    from .boxes import detection_format, load_box_folder, read_names

    root = Path(data)
    if not root.is_dir() or detection_format(root) is None:
        raise DataError(f"--task detection reads {root}/annotations.json (COCO) or {root}/labels/ (YOLO), neither is "
                        "there; lay the data out so, or pick the task of the data (leave --task out)")
    cap = None if max_samples_per_class is None else max_samples_per_class * len(read_names(root))
    return load_box_folder(root, image_size=image_size or 320, seed=seed, val_fraction=val_fraction, max_images=cap,
                           split_file=split_file, tile=tile, tile_overlap=tile_overlap)
