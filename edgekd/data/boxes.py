"""Detection data: images with boxes, from a COCO json or YOLO txt labels.

    DATA/images/NAME.jpg|png|tif      the images (any size)
    DATA/annotations.json             COCO: images (id, file_name, width, height), annotations
                                      (image_id, category_id, bbox [x, y, w, h] in pixels, iscrowd),
                                      categories (id, name)
  or
    DATA/labels/NAME.txt              YOLO: one `CLASS XC YC W H` line per box, relative to the image
    DATA/classes.txt | data.yaml      the class names (a name per line, or YOLO's `names:`)

Images without boxes are negatives and are kept. Crowd annotations (`iscrowd: 1`) are regions the
metric ignores; they are not training targets. A box partly outside its image is clipped to it; a
box of no area, or wholly outside, is dropped: `BoxNote` counts both, with the files.

Each image is letterboxed to `image_size` (scaled to fit, padded right and bottom with 0, the
rule the exports record), or cut into `tile` px windows overlapping by `tile_overlap` px (a large
scene), each window letterboxed alike; a box cut by a window's edge is clipped to it and kept when
at least MIN_VISIBLE of its area is inside. Labels are one tensor N x M x 5 of [class, x1, y1,
x2, y2] in model-input pixels, class -1 for padding, -2 - c for a crowd region of class c. The
split is by image (a tile's windows stay on one side), or --split FILE."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .dataset import Dataset
from .store import ImageArray, take

MIN_VISIBLE = 0.5  # a box cut by a tile edge is kept when this share of it lies in the tile
PAD_VALUE = 0.0  # letterbox padding (right and bottom)
COCO_FILES = ("annotations.json", "instances.json")
PADDING = -1  # the class of a padding row
CROWD = -2  # a crowd region of class c has class CROWD - c: no training target, ignored by the metric


@dataclass
class Boxes:
    """One image's boxes in its own pixels: classes (M,) (CROWD - c for a crowd region of class
    c), xyxy (M, 4)."""

    classes: np.ndarray
    xyxy: np.ndarray


@dataclass
class BoxNote:
    """What loading changed in the labels: boxes clipped to their image, boxes dropped (no area
    or outside), with the files they are in."""

    clipped: int = 0
    dropped: int = 0
    files: list[str] = field(default_factory=list)

    def add(self, name: str, clipped: int, dropped: int) -> None:
        self.clipped += clipped
        self.dropped += dropped
        if (clipped or dropped) and name not in self.files:
            self.files.append(name)

    def text(self) -> str:
        if not (self.clipped or self.dropped):
            return "every box inside its image"
        where = ", ".join(self.files[:5]) + (f" and {len(self.files) - 5} more" if len(self.files) > 5 else "")
        return (f"{self.clipped} boxes partly outside their image clipped, {self.dropped} of no area or wholly "
                f"outside dropped (in {where})")


def detection_format(root: Path) -> str | None:
    """'coco', 'yolo' or None (not a detection folder); both at once is refused."""
    coco = [p for p in (root / f for f in COCO_FILES) if p.is_file()]
    yolo = (root / "labels").is_dir()
    if coco and yolo:
        raise DataError(f"{root} holds both {coco[0].name} (COCO) and labels/ (YOLO); keep one label format (move the "
                        "other out)")
    return "coco" if coco else "yolo" if yolo else None


def _clean(name: str, classes: np.ndarray, xyxy: np.ndarray, w: int, h: int, note: BoxNote) -> Boxes:
    """Boxes clipped to the image; those of no area (or outside) dropped; counted in `note`."""
    clipped = np.stack([xyxy[:, 0].clip(0, w), xyxy[:, 1].clip(0, h), xyxy[:, 2].clip(0, w), xyxy[:, 3].clip(0, h)],
                       1) if len(xyxy) else xyxy.reshape(0, 4)
    changed = (np.abs(clipped - xyxy) > 1e-6).any(1) if len(xyxy) else np.zeros(0, bool)
    ok = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    note.add(name, int((changed & ok).sum()), int((~ok).sum()))
    return Boxes(classes[ok].astype(np.int64), clipped[ok].astype(np.float32))


def read_names(root: Path) -> list[str]:
    """The class names of a detection folder (COCO categories, or YOLO's names)."""
    if detection_format(root) == "yolo":
        return _yolo_names(root)
    path = next(root / f for f in COCO_FILES if (root / f).is_file())
    try:
        cats = json.loads(path.read_text()).get("categories") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{path} cannot be read as a COCO JSON file ({exc}); fix the file") from None
    return [str(c.get("name")) for c in cats]


def read_coco(root: Path, note: BoxNote) -> tuple[list[str], list[Path], list[Boxes]]:
    """(class names, image files, their boxes) of a COCO detection file, checked."""
    path = next(root / f for f in COCO_FILES if (root / f).is_file())
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as JSON ({exc}); fix the file") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in ("images", "categories")):
        raise DataError(f"{path} is not a COCO detection file: it needs lists 'images', 'annotations' and "
                        "'categories'")
    cats = sorted(raw["categories"], key=lambda c: c["id"])
    if len(cats) < 1:
        raise DataError(f"{path} lists no categories; add {{\"id\": 1, \"name\": ...}} entries")
    index = {int(c["id"]): i for i, c in enumerate(cats)}
    images = {int(im["id"]): im for im in raw["images"]}
    per: dict[int, list[dict]] = {i: [] for i in images}
    for a in raw.get("annotations", []):
        if int(a["image_id"]) not in images:
            raise DataError(f"{path}: annotation {a.get('id')} names image_id {a['image_id']}, which 'images' does not "
                            "list; add the image or remove the annotation")
        if int(a["category_id"]) not in index:
            raise DataError(f"{path}: annotation {a.get('id')} has category_id {a['category_id']}, not one of the "
                            f"categories ({', '.join(str(k) for k in index)}); add the category or fix the id")
        per[int(a["image_id"])].append(a)
    files, boxes = [], []
    for iid, im in sorted(images.items()):
        f = root / "images" / im["file_name"]
        if not f.is_file():
            raise DataError(f"{path}: image {im['file_name']} (id {iid}) is not in {root / 'images'}; add the file or "
                            "remove the image and its annotations")
        anns = per[iid]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        # a crowd region of class c is kept as class CROWD - c: the metric ignores detections in it
        cls = np.array([CROWD - index[int(a["category_id"])] if a.get("iscrowd") else index[int(a["category_id"])]
                        for a in anns], np.int64)
        files.append(f)
        boxes.append(_clean(im["file_name"], cls, xyxy, int(im["width"]), int(im["height"]), note))
    return [str(c["name"]) for c in cats], files, boxes


def _yolo_names(root: Path) -> list[str]:
    txt, yml = root / "classes.txt", root / "data.yaml"
    if txt.is_file():
        names = [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
    elif yml.is_file():
        import yaml

        raw = (yaml.safe_load(yml.read_text()) or {}).get("names")
        names = [str(raw[k]) for k in sorted(raw)] if isinstance(raw, dict) else [str(n) for n in (raw or [])]
    else:
        raise DataError(f"{root} has labels/ (YOLO) but no classes.txt or data.yaml; write classes.txt with one class "
                        "name per line, in class-index order")
    if not names:
        raise DataError(f"{txt if txt.is_file() else yml} names no class; write one class name per line")
    return names


def read_yolo(root: Path, note: BoxNote) -> tuple[list[str], list[Path], list[Boxes]]:
    """(class names, image files, their boxes) of a YOLO folder, checked. An image without a label
    file is a negative."""
    from .folder import IMAGE_SUFFIXES
    from .masks import _image_size_of

    names = _yolo_names(root)
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if (root / "images").is_dir() else []
    if not images:
        raise DataError(f"{root / 'images'} holds no images; put the images there, a labels/NAME.txt beside each")
    files, boxes = [], []
    for img in images:
        lab = root / "labels" / f"{img.stem}.txt"
        rows = []
        if lab.is_file():
            for n, line in enumerate(lab.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    c, xc, yc, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
                    if len(parts) != 5:
                        raise ValueError
                except (ValueError, IndexError):
                    raise DataError(f"{lab} line {n} is {line.strip()!r}; write CLASS XC YC W H (class index, then the "
                                    "box centre and size relative to the image, 0..1)") from None
                if not 0 <= c < len(names):
                    raise DataError(f"{lab} line {n} has class {c}; classes are 0..{len(names) - 1} "
                                    f"({', '.join(names)}): fix the line or add the class to classes.txt")
                rows.append((c, xc, yc, bw, bh))
        w, h = _image_size_of(img)
        a = np.array(rows, dtype=np.float64).reshape(-1, 5)
        xyxy = np.stack([(a[:, 1] - a[:, 3] / 2) * w, (a[:, 2] - a[:, 4] / 2) * h,
                         (a[:, 1] + a[:, 3] / 2) * w, (a[:, 2] + a[:, 4] / 2) * h], 1)
        files.append(img)
        boxes.append(_clean(img.name, a[:, 0].astype(np.int64), xyxy, w, h, note))
    return names, files, boxes


# -- windows and letterboxing ------------------------------------------------------------------

def windows(w: int, h: int, tile: int | None, overlap: int) -> list[tuple[int, int, int, int]]:
    """(left, top, width, height) of the windows an image is cut into: the whole image without a
    tile size (or when it fits in one tile); else tile x tile windows stepping by tile - overlap,
    the last flush with the edge."""
    if tile is None or (w <= tile and h <= tile):
        return [(0, 0, w, h)]

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        out = list(range(0, n - tile + 1, max(1, tile - overlap)))
        if out[-1] + tile < n:
            out.append(n - tile)
        return out

    return [(x, y, min(tile, w), min(tile, h)) for y in starts(h) for x in starts(w)]


def window_boxes(b: Boxes, win: tuple[int, int, int, int], scale: float) -> np.ndarray:
    """[class, x1, y1, x2, y2] rows of the boxes seen in a window, clipped to it, kept when at
    least MIN_VISIBLE of their area is inside, in the letterboxed window's pixels."""
    left, top, ww, wh = win
    if not len(b.xyxy):
        return np.zeros((0, 5), np.float32)
    x = b.xyxy - np.array([left, top, left, top], np.float32)
    c = np.stack([x[:, 0].clip(0, ww), x[:, 1].clip(0, wh), x[:, 2].clip(0, ww), x[:, 3].clip(0, wh)], 1)
    area = (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    seen = (c[:, 2] - c[:, 0]).clip(0) * (c[:, 3] - c[:, 1]).clip(0)
    keep = seen >= MIN_VISIBLE * area
    return np.concatenate([b.classes[keep, None].astype(np.float32), c[keep] * scale], 1)


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(the image C x H x W scaled to fit size x size, padded right and bottom; the scale)."""
    from PIL import Image

    c, h, w = img.shape
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.full((c, size, size), PAD_VALUE, np.float32)
    for i in range(c):
        out[i, :nh, :nw] = np.asarray(Image.fromarray(img[i]).resize((nw, nh), Image.Resampling.BILINEAR))
    return out, scale


def pad_labels(rows: list[np.ndarray]) -> torch.Tensor:
    """Per-image [class, x1, y1, x2, y2] rows as one N x M x 5 tensor, class -1 for padding."""
    m = max([1, *(len(r) for r in rows)])
    out = torch.full((len(rows), m, 5), -1.0)
    for i, r in enumerate(rows):
        if len(r):
            out[i, :len(r)] = torch.from_numpy(np.asarray(r, np.float32))
    return out


def _read_image(path: Path) -> np.ndarray:
    """An image as float32 C x H x W in [0, 1] (RGB; GeoTIFF bands / their type's range)."""
    from PIL import Image

    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            arr = src.read().astype(np.float32)
            top = 255.0 if src.dtypes[0] == "uint8" else 65535.0 if src.dtypes[0] == "uint16" else max(arr.max(), 1.0)
            return np.clip(arr / top, 0, 1)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    except (OSError, ValueError) as exc:
        raise DataError(f"image {path} cannot be read ({exc}); remove or replace it") from None


def image_shape(path: Path) -> tuple[int, int, int]:
    """(height, width, bands) of an image from its header, without decoding it."""
    from PIL import Image

    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            return src.height, src.width, src.count
    try:
        with Image.open(path) as im:
            return im.height, im.width, 3
    except (OSError, ValueError) as exc:
        raise DataError(f"image {path} cannot be read ({exc}); remove or replace it") from None


def _decode_windows(files: list[Path], wins: list[tuple[int, int, int, int]], image_size: int, tile: int | None,
                    overlap: int) -> ImageArray:
    """Every window of its file letterboxed to `image_size`, decoded once into the image cache
    (edgekd.data.store: uint8 for ordinary images, float32 in [0, 1] for GeoTIFFs) and served
    from it; the windows of one file follow each other, so it is read once."""
    from .store import ImageArray, decode_folder

    tiff = any(f.suffix.lower() in (".tif", ".tiff") for f in files)
    bands = image_shape(files[0])[2] if tiff else 3
    last: dict[Path, np.ndarray] = {}

    def read_at(i: int, f: Path) -> np.ndarray:
        if f not in last:
            last.clear()
            last[f] = _read_image(f)
        img = last[f]
        if img.shape[0] != bands:
            raise DataError(f"image {f} has {img.shape[0]} bands and {files[0]} {bands}; give images of one band "
                            "count")
        left, top, ww, wh = wins[i]
        crop = letterbox(img[:, top:top + wh, left:left + ww], image_size)[0]
        return crop if tiff else np.rint(crop * 255.0).astype(np.uint8)

    data, _ = decode_folder(files, lambda f: None, (bands, image_size, image_size), "float32" if tiff else "uint8",
                            {"image_size": image_size, "resize": "letterbox", "reader": "boxes", "tile": tile,
                             "overlap": overlap, "windows": [list(w) for w in wins]}, read_at=read_at)
    return ImageArray(data, [1.0 if tiff else 255.0] * bands)


def load_box_folder(root: Path, *, image_size: int, seed: int, val_fraction: float, max_images: int | None,
                    split_file: Path | None = None, tile: int | None = None, tile_overlap: int = 32) -> Dataset:
    """A detection data set from `root` (COCO or YOLO), split by image."""
    check_size(image_size)
    if tile is not None and not 0 <= tile_overlap < tile:
        raise DataError(f"--tile-overlap {tile_overlap} must be at least 0 and less than --tile {tile}; e.g. "
                        "--tile 512 --tile-overlap 100")
    fmt = detection_format(root)
    if fmt is None:
        raise DataError(f"--task detection reads {root}/annotations.json (COCO) or {root}/labels/ (YOLO), neither is "
                        "there; add one, or pick the task of the data")
    note = BoxNote()
    names, files, boxes = (read_coco if fmt == "coco" else read_yolo)(root, note)
    if len(names) < 1:
        raise DataError(f"{root} names no class")
    listed = _listed(split_file, files) if split_file is not None else None
    order = np.arange(len(files))
    if max_images is not None and listed is None and len(files) > max_images:
        order = np.sort(np.random.default_rng(seed).permutation(len(files))[:max_images])
    rows, image_of, sizes, wins = [], [], [], []
    for i in order:
        h, w, _ = image_shape(files[i])
        sizes.append((h, w))
        for win in windows(w, h, tile, tile_overlap):
            rows.append(window_boxes(boxes[i], win, image_size / max(win[2], win[3])))
            image_of.append(int(i))
            wins.append(win)
    parts = _split(np.array(image_of), listed, files, val_fraction, seed)
    xt, yt = _decode_windows([files[i] for i in image_of], wins, image_size, tile, tile_overlap), pad_labels(rows)
    cut = f"; images cut into {tile} px tiles overlapping by {tile_overlap} px" if tile else ""
    how = (f"--split {split_file}" if listed else
           f"by image ({len(order)} images), val_fraction {val_fraction:g}") + cut
    c = xt.shape[1]
    ds = Dataset(name=root.name, classes=names, bands=["R", "G", "B"] if c == 3 else [f"B{i + 1}" for i in range(c)],
                 x_train=take(xt, parts["train"]), y_train=yt[parts["train"]],
                 x_val=take(xt, parts["val"]), y_val=yt[parts["val"]], synthetic=False, source=str(root.resolve()),
                 split=how, task="detection", band_note=f"{fmt.upper()} boxes: {note.text()}; images letterboxed to "
                 f"{image_size} px (scaled to fit, padded right and bottom)")
    if len(parts.get("test", [])):
        ds.x_test, ds.y_test = take(xt, parts["test"]), yt[parts["test"]]
    ds.frame_size = (int(np.median([s[1] for s in sizes])), int(np.median([s[0] for s in sizes])))
    _check_classes(ds, root)
    return ds


def check_size(image_size: int) -> None:
    if image_size % 32 or image_size < 32:
        raise DataError(f"--image-size {image_size}: a detector's input must be a multiple of 32 px (its coarsest "
                        "level has stride 32); e.g. --image-size 320 or 512")


def _check_classes(ds: Dataset, root: Path) -> None:
    present = set(ds.y_train[..., 0].reshape(-1).long().tolist()) - {-1}
    absent = [n for i, n in enumerate(ds.classes) if i not in present]
    if absent:
        raise DataError(f"class {absent[0]!r} has no box in the training split of {root}; add training images that "
                        "show it or remove the class")


def _split(image_of: np.ndarray, listed: dict[str, set[int]] | None, files: list[Path], val_fraction: float,
           seed: int) -> dict[str, np.ndarray]:
    """Rows of each split: whole images (all windows of an image on one side)."""
    ids = np.unique(image_of)
    if listed is None:
        if len(ids) < 2:
            raise DataError("the data holds one image only, so no validation image is left; add images or pass "
                            "--split FILE")
        perm = np.random.default_rng(seed).permutation(ids)
        n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
        listed = {"val": set(perm[:n_val].tolist()), "train": set(perm[n_val:].tolist())}
    return {k: np.flatnonzero(np.isin(image_of, sorted(v))) for k, v in listed.items()}


def _listed(split_file: Path, files: list[Path]) -> dict[str, set[int]]:
    """--split FILE: train/val/test lists of image file names, as indices into `files`."""
    import yaml

    try:
        spec = yaml.safe_load(split_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"--split {split_file} cannot be read ({exc}); pass a YAML or JSON file mapping train, val, "
                        "test to lists of image file names") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("train"), list) or not isinstance(spec.get("val"), list):
        raise DataError(f"--split {split_file} must map train and val (and optionally test) to lists of image files")
    where = {f.name: i for i, f in enumerate(files)}
    out = {}
    for key in ("train", "val", "test"):
        for name in spec.get(key, []):
            if Path(str(name)).name not in where:
                raise DataError(f"--split {split_file} lists {name}, which is not an image of the data set")
        if key in spec:
            out[key] = {where[Path(str(n)).name] for n in spec[key]}
    from .folder import overlap_between

    overlap_between(split_file, {k: sorted(files[i].name for i in v) for k, v in out.items()})
    return out
