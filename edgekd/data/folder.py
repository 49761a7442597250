"""Image-folder data sets: one sub-folder per class (EuroSAT RGB, UC Merced, RSSCN7 layout)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .dataset import Dataset

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


# single-band images deeper than 8 bits, by the full scale of their values
HIGH_BIT_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0}


def _read_image(path: Path, size: int, window: tuple[int, int, int] | None = None) -> np.ndarray | None:
    """RGB in [0, 1] at size x size, or None when the file is not an image. A 16-bit image is
    scaled by its bit depth (not clipped to white); an image over Pillow's decompression-bomb
    limit is refused. `window` (top, left, side): that square of the image only (a tile)."""
    try:
        with Image.open(path) as im:
            if window is not None:
                top, left, side = window
                im = im.crop((left, top, left + side, top + side))
            if im.mode in HIGH_BIT_MODES:
                im = im.convert("I") if im.mode != "I" else im
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                grey = np.asarray(im, dtype=np.float32) / HIGH_BIT_MODES[im.mode]
                return np.repeat(np.clip(grey, 0.0, 1.0)[None], 3, axis=0)
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path} is too large to decode safely ({exc}); shrink or remove it") from None
    except (UnidentifiedImageError, OSError, ValueError):
        return None


SPLITS = ("train", "val", "test")  # a folder with these at the top holds the user's own split


def _class_dirs(root: Path, min_classes: int, fix: str) -> list[Path]:
    if not root.exists():
        raise DataError(f"data folder {root} does not exist; {fix}")
    if not root.is_dir():
        raise DataError(f"--data {root} is not a folder; {fix}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"data folder {root} has no class sub-folders; {fix}")
    if len(class_dirs) < min_classes:  # an update's new data may bring a single class
        raise DataError(f"data folder {root} has only one class folder ({class_dirs[0].name}); "
                        "a classifier needs at least two classes")
    return class_dirs


def load_image_folder(
    root: Path, *, image_size: int, seed: int, val_fraction: float, max_per_class: int | None = None,
    min_classes: int = 2, bands: list[str] | None = None, split_file: Path | None = None,
) -> Dataset:
    """Read every image under root/CLASS/, resized to image_size x image_size RGB in [0, 1]; a
    folder of GeoTIFFs keeps its bands (all, or `bands` by name or 1-based index), each scaled
    into [0, 1] from the training split's statistics (edgekd.data.geotiff).
    A folder whose top level is train/ (with val/ and/or test/ beside it, each holding the class
    folders) is the user's own split: it is honoured, not redrawn.

    Unreadable files are skipped and listed in the data set summary; a class with no readable
    image is an error."""
    fix = "pass --data DIR with one sub-folder of images per class (e.g. DIR/Forest/*.jpg)"
    if split_file is not None:
        classes, listed = read_split_file(root, split_file)
        return _load_listed(root, classes, listed, image_size, seed, val_fraction, f"--split {split_file}", bands)
    if (root / "train").is_dir() and ((root / "val").is_dir() or (root / "test").is_dir()):
        return _load_split_folders(root, image_size, seed, val_fraction, max_per_class, min_classes, bands)
    class_dirs = _class_dirs(root, min_classes, fix)
    if _is_geotiff_folder(class_dirs):
        return _load_geotiff_folder(root, class_dirs, image_size, seed, val_fraction, max_per_class, bands)
    if bands:
        raise DataError(_ORDINARY_BANDS.format(root=root))
    return _load_streamed(root, class_dirs, image_size, seed, val_fraction, max_per_class)


_ORDINARY_BANDS = ("--bands selects bands of multispectral GeoTIFFs; {root} holds ordinary images (read as R, G, "
                   "B): leave out --bands")


def _listed(class_dirs: list[Path], max_per_class: int | None, rng: np.random.Generator) -> list[list[Path]]:
    out = []
    for cdir in class_dirs:
        files = sorted(p for p in cdir.iterdir() if p.is_file() and not p.name.startswith("."))
        if max_per_class is not None and len(files) > max_per_class:
            files = sorted(rng.choice(np.array(files, dtype=object), max_per_class, replace=False))
        out.append(files)
    return out


def _high_bit(files: list[Path]) -> bool:
    """Whether the folder holds images deeper than 8 bits (then it is cached as uint16)."""
    for f in files:
        if f.suffix.lower() in IMAGE_SUFFIXES:
            try:
                with Image.open(f) as im:
                    if im.mode in HIGH_BIT_MODES:
                        return True
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                continue
    return False


Window = tuple[int, int, int]  # (top, left, side) of a square tile in its source image


def _decode_rgb(files: list[Path], image_size: int, probe: list[Path], windows: list[Window | None] | None = None
                ) -> tuple[np.ndarray, list[bool], float]:
    """`files` decoded as RGB into the image cache (uint16 when the `probe` files are deeper than
    8 bits, else uint8): the memory map, which files were readable, and the full-scale value.
    `windows`: row i is that square of files[i] (tiles of large scenes)."""
    from .store import decode_folder

    deep = _high_bit(probe)
    full = 65535.0 if deep else 255.0

    def read_at(i: int, f: Path) -> np.ndarray | None:
        window = windows[i] if windows is not None else None
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            return None
        img = _read_image(f, image_size) if window is None else _read_image(f, image_size, window)
        return None if img is None else np.round(img * full)

    data, ok = decode_folder(files, lambda f: None, (3, image_size, image_size), "uint16" if deep else "uint8",
                             {"image_size": image_size, "resize": "bilinear", "reader": "rgb",
                              **({"windows": windows} if windows is not None else {})}, read_at=read_at)
    return data, ok, full


def _load_streamed(root: Path, class_dirs: list[Path], image_size: int, seed: int, val_fraction: float,
                   max_per_class: int | None) -> Dataset:
    """The folder decoded once into the image cache (edgekd.data.store) and served from it in
    batches: its training and validation splits are views of one memory-mapped array."""
    import torch

    from .dataset import stratified_split
    from .store import ImageArray

    per_class = _listed(class_dirs, max_per_class, np.random.default_rng(seed))
    files = [f for fs in per_class for f in fs]
    labels = np.array([i for i, fs in enumerate(per_class) for _ in fs], dtype=np.int64)
    data, ok, full = _decode_rgb(files, image_size, [fs[0] for fs in per_class if fs])
    readable = np.flatnonzero(ok)
    for label, cdir in enumerate(class_dirs):
        n_ok = int((labels[readable] == label).sum())
        if n_ok == 0:
            raise DataError(f"class folder {cdir} has no readable images ({len(per_class[label])} files); "
                            f"add {', '.join(sorted(IMAGE_SUFFIXES))} images or remove the folder")
        if n_ok < 2:
            raise DataError(f"class folder {cdir} has only one readable image; "
                            "each class needs at least two (one for training, one for validation)")
    tr, va = stratified_split(labels[readable], val_fraction, seed)
    images = ImageArray(data, [full] * 3)
    y = torch.from_numpy(labels[readable])
    return Dataset(name=root.name, classes=[d.name for d in class_dirs], bands=["R", "G", "B"],
                   x_train=images.view(readable[tr]), y_train=y[tr], x_val=images.view(readable[va]), y_val=y[va],
                   synthetic=False, source=str(root.resolve()),
                   skipped_files=[str(f) for f, good in zip(files, ok) if not good])


def _load_split_folders(root: Path, image_size: int, seed: int, val_fraction: float, max_per_class: int | None,
                        min_classes: int, bands: list[str] | None = None) -> Dataset:
    """root/train/CLASS, root/val/CLASS, root/test/CLASS: the classes are train's; val/ and test/
    may lack a class but not add one. Without val/, validation is drawn from train/."""
    fix = "pass --data DIR holding train/CLASS/, val/CLASS/ and/or test/CLASS/ image folders"
    train_dirs = _class_dirs(root / "train", min_classes, fix)
    classes = [d.name for d in train_dirs]
    rng = np.random.default_rng(seed)
    listed: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        dirs = train_dirs if split == "train" else _class_dirs(root / split, 1, fix)
        extra = [d.name for d in dirs if d.name not in classes]
        if extra:
            raise DataError(f"{root / split} has classes that {root / 'train'} lacks ({', '.join(extra)}); every "
                            "class of val/ and test/ must be in train/")
        per_class = _listed(dirs, max_per_class, rng)
        listed[split] = [(f, classes.index(d.name)) for d, fs in zip(dirs, per_class) for f in fs]
    return _load_listed(root, classes, listed, image_size, seed, val_fraction,
                        "the folder's own train/" + "/".join(k for k in ("val", "test") if k in listed), bands)


def overlap_between(split_file: Path, lists: dict[str, list[str]]) -> None:
    """An image in two of train/val/test leaks what is held out into training: refused."""
    names = [k for k in SPLITS if k in lists]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = sorted(set(lists[a]) & set(lists[b]))
            if both:
                raise DataError(f"--split {split_file} lists {len(both)} image(s) in both {a} and {b}, e.g. "
                                f"{Path(both[0]).name}; every image belongs to one split")


def read_split_file(root: Path, split_file: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """A YAML or JSON mapping train/val/test -> image paths relative to `root` (CLASS/FILE: the
    class is the parent folder). Every path must exist; val and test may not add classes."""
    import yaml

    try:
        spec = yaml.safe_load(split_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"--split {split_file} cannot be read ({exc}); pass a YAML or JSON file mapping train, val, "
                        "test to lists of paths relative to --data") from None
    if not isinstance(spec, dict) or "train" not in spec or set(spec) - set(SPLITS):
        raise DataError(f"--split {split_file} must map train (and optionally val, test) to lists of image paths "
                        f"relative to --data; it has {sorted(spec) if isinstance(spec, dict) else type(spec).__name__}")
    paths = {k: [root / str(p) for p in (v or [])] for k, v in spec.items()}
    missing = [p for ps in paths.values() for p in ps if not p.is_file()]
    if missing:
        raise DataError(f"--split {split_file} lists {len(missing)} file(s) that do not exist under {root}, e.g. "
                        f"{missing[0]}; paths are relative to --data (CLASS/FILE)")
    overlap_between(split_file, {k: [str(p.resolve()) for p in ps] for k, ps in paths.items()})
    classes = sorted({p.parent.name for p in paths["train"]})
    extra = sorted({p.parent.name for ps in paths.values() for p in ps} - set(classes))
    if extra:
        raise DataError(f"--split {split_file}: val/test hold classes that train lacks ({', '.join(extra)})")
    return classes, {k: [(p, classes.index(p.parent.name)) for p in ps] for k, ps in paths.items() if ps}


def _load_listed(root: Path, classes: list[str], listed: dict[str, list[tuple[Path, int]]], image_size: int,
                 seed: int, val_fraction: float, how: str, bands: list[str] | None = None) -> Dataset:
    """Given splits of (file, label), decoded once into the image cache (RGB images, or every
    chosen band of GeoTIFFs); without a val split, validation is drawn from train per class."""
    import torch

    from .dataset import stratified_split
    from .store import ImageArray

    files = [f for split in SPLITS for f, _ in listed.get(split, [])]
    labels = np.array([y for split in SPLITS for _, y in listed.get(split, [])], dtype=np.int64)
    where = np.concatenate([np.full(len(listed.get(k, [])), i) for i, k in enumerate(SPLITS)]).astype(np.int64)
    decoded = _decode_any(root, files, image_size, bands)
    good = np.asarray(decoded.ok, dtype=bool)
    rows = {k: np.flatnonzero((where == i) & good) for i, k in enumerate(SPLITS)}
    if "val" not in listed:
        tr, va = stratified_split(labels[rows["train"]], val_fraction, seed)
        rows["train"], rows["val"] = rows["train"][tr], rows["train"][va]
    missing = [c for i, c in enumerate(classes) if not (labels[rows["train"]] == i).any()]
    if missing:
        raise DataError(f"no readable training image of class {', '.join(missing)} in {root}; add images or remove "
                        "the class")
    scales, band_scale, note = decoded.scales(rows["train"], seed)
    images, y = ImageArray(decoded.data, scales), torch.from_numpy(labels)
    ds = Dataset(name=root.name, classes=classes, bands=decoded.bands, x_train=images.view(rows["train"]),
                 y_train=y[rows["train"]], x_val=images.view(rows["val"]), y_val=y[rows["val"]], synthetic=False,
                 source=str(root.resolve()), skipped_files=[str(f) for f, g in zip(files, decoded.ok) if not g],
                 split=how, band_scale=band_scale, band_note=note)
    if len(rows["test"]):
        ds.x_test, ds.y_test = images.view(rows["test"]), y[rows["test"]]
    return ds


@dataclass
class _Decoded:
    """A list of files in the image cache: the memory map, which files were readable, the band
    names, and how to scale each band given the training rows (scales, recorded scales, note)."""

    data: np.ndarray
    ok: list[bool]
    bands: list[str]
    scales: Callable[[np.ndarray, int], tuple[list[float], list[float] | None, str]]


def _decode_any(root: Path, files: list[Path], image_size: int, bands: list[str] | None,
                windows: list[Window | None] | None = None) -> _Decoded:
    """RGB for ordinary images; every chosen band for a list whose images are all GeoTIFFs."""
    from .geotiff import TIFF_SUFFIXES, band_scales, read_layout, read_tiff, select_bands
    from .store import decode_folder

    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not images or not all(f.suffix.lower() in TIFF_SUFFIXES for f in images):
        if bands:
            raise DataError(_ORDINARY_BANDS.format(root=root))
        probe = list({f.parent: f for f in reversed(images)}.values())  # the first image of each folder
        data, ok, full = _decode_rgb(files, image_size, probe, windows)
        return _Decoded(data, ok, ["R", "G", "B"], lambda rows, seed: ([full] * 3, None, ""))
    layout = read_layout(images[0])
    chosen = select_bands(layout, bands)
    names = [layout.names[i] for i in chosen]
    data, ok = decode_folder(files, lambda f: None, (len(chosen), image_size, image_size),
                             layout.dtype if layout.dtype in ("uint8", "uint16") else "float32",
                             {"image_size": image_size, "resize": "bilinear", "reader": "geotiff", "bands": chosen,
                              **({"windows": windows} if windows is not None else {})},
                             read_at=lambda i, f: read_tiff(f, image_size, layout, chosen,
                                                            windows[i] if windows is not None else None)
                             if f.suffix.lower() in TIFF_SUFFIXES else None)

    def scales(train_rows: np.ndarray, seed: int) -> tuple[list[float], list[float] | None, str]:
        sample = np.sort(np.random.default_rng(seed).permutation(train_rows)[:2000])  # training images only
        s = band_scales(np.asarray(data[sample], dtype=np.float32), layout.dtype)
        return s, s, (f"GeoTIFF {layout.dtype}, bands {', '.join(names)} of {', '.join(layout.names)}; "
                      + ("8-bit values / 255" if layout.dtype == "uint8" else
                         "each band / its 99th percentile over the training split (up to 2,000 images), "
                         "clipped to [0, 1]"))

    return _Decoded(data, ok, names, scales)


def _image_files(cdir: Path) -> list[Path]:
    return sorted(p for p in cdir.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def _is_geotiff_folder(class_dirs: list[Path]) -> bool:
    """Every image file of the folder is a TIFF (then rasterio reads every band of it)."""
    from .geotiff import TIFF_SUFFIXES

    files = [f for d in class_dirs for f in _image_files(d)]
    return bool(files) and all(f.suffix.lower() in TIFF_SUFFIXES for f in files)


def _load_geotiff_folder(root: Path, class_dirs: list[Path], image_size: int, seed: int, val_fraction: float,
                         max_per_class: int | None, bands: list[str] | None) -> Dataset:
    rng = np.random.default_rng(seed)
    listed = []
    for label, d in enumerate(class_dirs):
        files = _image_files(d)
        if max_per_class is not None and len(files) > max_per_class:
            files = sorted(rng.choice(np.array(files, dtype=object), max_per_class, replace=False))
        if len(files) < 2:
            raise DataError(f"class folder {d} has {len(files)} GeoTIFF(s); each class needs at least two")
        listed += [(f, label) for f in files]
    return _load_listed(root, [d.name for d in class_dirs], {"train": listed}, image_size, seed, val_fraction,
                        "drawn at random per class (val_fraction)", bands)


def unlabeled_images(root: Path, image_size: int) -> torch.Tensor:
    """Every readable image under `root` (any depth; no class folders needed) as RGB in [0, 1]."""
    import torch

    if not root.is_dir():
        raise DataError(f"--unlabeled {root} is not a folder of images; pass a folder (any layout)")
    imgs = [im for f in sorted(root.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            for im in [_read_image(f, image_size)] if im is not None]
    if not imgs:
        raise DataError(f"--unlabeled {root} holds no readable images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return torch.from_numpy(np.stack(imgs))
