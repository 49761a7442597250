"""Segmentation data: `images/` + `masks/` with the same file stems, masks holding class indices.

    DATA/images/NAME.jpg|png|tif     RGB images, or GeoTIFFs (every band, or --bands)
    DATA/masks/NAME.png|tif          single-channel class indices (the ignore index, 255 by default,
                                     marks pixels without a label)
    DATA/classes.json | classes.txt  the class names (and the ignore index)

`classes.json` is {"classes": [{"index": 0, "name": "building"}, ...], "ignore_index": 255}, a
list of names, or {"0": "building", ...}; `classes.txt` holds `INDEX NAME` lines (a line for the
ignore index, e.g. `255 ignore`, sets it). Colour-coded RGB masks are converted with
`--mask-palette FILE` ({"#3C1098": 0, ...} or {"3C1098": "building"}).

Tiles of one scene are near duplicates, so the split is by scene: tiles named `SCENE_rR_cC`
(a source image cut into rows and columns) share the scene `SCENE`; any other file is its own
scene. Images are decoded once into the image cache (edgekd.data.store); masks are resized
with nearest-neighbour sampling and held as uint8."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".gif")
DEFAULT_IGNORE = 255
SCENE_OF_TILE = re.compile(r"^(?P<scene>.+)_r\d+_c\d+$")


@dataclass(frozen=True)
class ClassList:
    names: list[str]
    ignore_index: int = DEFAULT_IGNORE


def is_mask_folder(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


def read_classes(root: Path) -> ClassList:
    """The classes of a mask folder from classes.json or classes.txt (indices 0..K-1, in order)."""
    js, txt = root / "classes.json", root / "classes.txt"
    pairs: dict[int, str] = {}
    ignore = DEFAULT_IGNORE
    if js.is_file():
        try:
            raw = json.loads(js.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{js} cannot be read as JSON ({exc}); fix it or write classes.txt with INDEX NAME "
                            "lines") from None
        if isinstance(raw, dict) and "classes" in raw:
            ignore = int(raw.get("ignore_index", DEFAULT_IGNORE))
            raw = raw["classes"]
        if isinstance(raw, list):
            for i, item in enumerate(raw):
                if isinstance(item, dict):
                    pairs[int(item.get("index", i))] = str(item["name"])
                else:
                    pairs[i] = str(item)
        elif isinstance(raw, dict):
            pairs = {int(k): str(v) for k, v in raw.items()}
        else:
            raise DataError(f"{js} must hold a list of class names or {{\"classes\": [...], \"ignore_index\": 255}}")
    elif txt.is_file():
        for n, line in enumerate(txt.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            index, _, name = line.strip().partition(" ")
            if not index.isdigit() or not name.strip():
                raise DataError(f"{txt} line {n} is {line.strip()!r}; write INDEX NAME, e.g. 0 building")
            pairs[int(index)] = name.strip()
    else:
        raise DataError(f"{root} has images/ and masks/ but no classes.json or classes.txt; write classes.txt with "
                        "one INDEX NAME line per class (e.g. 0 building), and 255 ignore for unlabelled pixels")
    if ignore in pairs:
        pairs.pop(ignore)  # `255 ignore` names the ignore index, not a class
    high = [i for i in pairs if i > 250]
    if len(high) == 1 and len(pairs) > 1 and max(pairs) == high[0] and high[0] != len(pairs) - 1:
        ignore = high[0]
        pairs.pop(ignore)
    if sorted(pairs) != list(range(len(pairs))) or len(pairs) < 2:
        raise DataError(f"classes of {root} must be numbered 0..K-1 with K >= 2 (found {sorted(pairs)}); fix "
                        "classes.json / classes.txt")
    return ClassList([pairs[i] for i in range(len(pairs))], ignore)


def read_palette(path: Path, classes: list[str]) -> dict[tuple[int, int, int], int]:
    """--mask-palette FILE: colour -> class index ('#RRGGBB' keys; values an index or a class name)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"--mask-palette {path} cannot be read as JSON ({exc}); write {{\"#3C1098\": 0, ...}}") \
            from None
    out: dict[tuple[int, int, int], int] = {}
    for key, value in (raw.items() if isinstance(raw, dict) else []):
        hexa = str(key).lstrip("#")
        if not re.fullmatch(r"[0-9A-Fa-f]{6}", hexa):
            raise DataError(f"--mask-palette {path}: {key!r} is not a colour; write '#RRGGBB' keys")
        index = classes.index(value) if isinstance(value, str) and value in classes else value
        if not isinstance(index, int):
            raise DataError(f"--mask-palette {path}: {key} maps to {value!r}, neither a class index nor one of "
                            f"{', '.join(classes)}")
        out[(int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16))] = index
    if not out:
        raise DataError(f"--mask-palette {path} maps no colour; write {{\"#3C1098\": 0, ...}}")
    return out


def scene_of(stem: str) -> str:
    m = SCENE_OF_TILE.match(stem)
    return m.group("scene") if m else stem


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    from .folder import IMAGE_SUFFIXES

    images = sorted(p for p in (root / "images").iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{root / 'images'} holds no images; add {', '.join(sorted(IMAGE_SUFFIXES))} files with a "
                        "mask of the same name in masks/")
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.suffix.lower() in MASK_SUFFIXES}
    out = []
    for img in images:
        mask = masks.get(img.stem)
        if mask is None:
            raise DataError(f"no mask for {img}: add masks/{img.stem}.png (class indices), or remove the image")
        out.append((img, mask))
    return out


def _image_size_of(path: Path) -> tuple[int, int]:
    from PIL import Image

    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            return src.width, src.height
    with Image.open(path) as im:
        return im.size


def _check_geo_pair(image: Path, mask: Path) -> None:
    """A GeoTIFF mask must lie on its image's grid: same size, transform and CRS."""
    import rasterio

    with rasterio.open(image) as a, rasterio.open(mask) as b:
        if (a.width, a.height) != (b.width, b.height):
            raise DataError(f"mask {mask} is {b.width}x{b.height}, its image {a.width}x{a.height}; give the mask on "
                            "the image's grid")
        if a.crs != b.crs:
            raise DataError(f"mask {mask} has CRS {b.crs}, its image {image.name} {a.crs}; reproject the mask onto "
                            "the image's grid")
        if not a.transform.almost_equals(b.transform):
            raise DataError(f"mask {mask} has another geotransform than its image {image.name}; resample the mask "
                            "onto the image's grid")


def mask_values(mask: Path, image: Path, classes: ClassList,
                palette: dict[tuple[int, int, int], int] | None) -> np.ndarray:
    """The mask of `image` as class indices at its own size, checked: its size is the image's,
    it has one channel (or --mask-palette colours), every value is a class or the ignore index."""
    from PIL import Image

    if mask.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        if image.suffix.lower() in (".tif", ".tiff"):
            _check_geo_pair(image, mask)
        with rasterio.open(mask) as src:
            if src.count != 1:
                raise DataError(f"mask {mask} has {src.count} bands; a mask holds one band of class indices")
            arr = src.read(1)
    else:
        try:
            with Image.open(mask) as im:
                im.load()
                mode, msize, arr = im.mode, im.size, np.asarray(im)
        except (OSError, ValueError) as exc:
            raise DataError(f"mask {mask} cannot be read ({exc}); write it as a single-channel PNG") from None
        w, h = _image_size_of(image)
        if msize != (w, h):
            raise DataError(f"mask {mask} is {msize[0]}x{msize[1]}, its image {image.name} {w}x{h}; give each mask "
                            "the size of its image")
        if mode in ("RGB", "RGBA"):
            if palette is None:
                raise DataError(f"mask {mask} is a colour (RGB) image; masks hold class indices: pass --mask-palette "
                                "FILE (a JSON map '#RRGGBB' -> class index) to convert colour masks")
            arr = _from_palette(arr[..., :3], palette, mask, classes.ignore_index)
        elif mode not in ("L", "P", "I", "I;16", "1"):
            raise DataError(f"mask {mask} has mode {mode}; write single-channel 8-bit PNG masks of class indices")
    arr = np.asarray(arr).astype(np.int64)
    bad = np.setdiff1d(np.unique(arr), [*range(len(classes.names)), classes.ignore_index])
    if len(bad):
        raise DataError(f"mask {mask} holds value {int(bad[0])}, neither a class (0..{len(classes.names) - 1}) nor the "
                        f"ignore index {classes.ignore_index}; fix the mask or list the class in classes.json")
    return arr.astype(np.uint8)


def resize_mask(arr: np.ndarray, size: int, window: tuple[int, int, int] | None = None) -> np.ndarray:
    """A mask (or its `window` square: top, left, side) at size x size, nearest neighbour."""
    from PIL import Image

    if window is not None:
        top, left, side = window
        arr = arr[top:top + side, left:left + side]
    out = Image.fromarray(arr)
    if out.size != (size, size):
        out = out.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(out, dtype=np.uint8)


def read_mask(mask: Path, image: Path, size: int, classes: ClassList,
              palette: dict[tuple[int, int, int], int] | None) -> np.ndarray:
    """The checked mask of `image` at size x size (nearest)."""
    return resize_mask(mask_values(mask, image, classes, palette), size)


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """(top, left, side) of square tiles of `tile` px stepping by tile - overlap, the last row and
    column flush with the edges; one window of the whole image's shorter side when it is smaller."""
    if height <= tile or width <= tile:
        side = min(height, width)
        return [(0, 0, side)] if height == width else _grid(height, width, side, 0)
    return _grid(height, width, tile, overlap)


def _grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    step = max(1, tile - overlap)

    def starts(n: int) -> list[int]:
        out = list(range(0, n - tile + 1, step))
        if out[-1] + tile < n:
            out.append(n - tile)
        return out

    return [(t, left, tile) for t in starts(height) for left in starts(width)]


def _from_palette(rgb: np.ndarray, palette: dict[tuple[int, int, int], int], mask: Path, ignore: int) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    out = np.full(code.shape, -1, dtype=np.int64)
    for (r, g, b), index in palette.items():
        out[code == ((r << 16) | (g << 8) | b)] = index
    if (out < 0).any():
        c = int(code[out < 0][0])
        raise DataError(f"mask {mask} has colour #{c:06X}, which --mask-palette does not map; add it (to a class or "
                        f"to the ignore index {ignore})")
    return out


def split_by_scene(scenes: list[str], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows): whole scenes drawn at random into validation until it holds about
    `val_fraction` of the tiles; every tile of a scene is on one side."""
    names = sorted(set(scenes))
    if len(names) < 2:
        raise DataError("the data holds one scene only, so no validation scene is left for an honest split; add "
                        "tiles of other scenes or pass --split FILE")
    order = np.random.default_rng(seed).permutation(len(names))
    per: dict[str, list[int]] = {}
    for row, s in enumerate(scenes):
        per.setdefault(s, []).append(row)
    val: list[int] = []
    for n_val, i in enumerate(order):
        if n_val >= len(names) - 1 or (val and len(val) >= val_fraction * len(scenes)):
            break
        val.extend(per[names[i]])
    val_rows = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(scenes)), val_rows), val_rows


@dataclass(frozen=True)
class Entry:
    """One row of the data set: an image (or a `window` of it: top, left, side) and its mask."""

    image: Path
    mask: Path
    window: tuple[int, int, int] | None = None


def _entries(pairs: list[tuple[Path, Path]], tile: int | None, overlap: int) -> list[Entry]:
    if tile is None:
        return [Entry(img, m) for img, m in pairs]
    out = []
    for img, m in pairs:
        w, h = _image_size_of(img)
        out += [Entry(img, m, win) for win in tile_grid(h, w, tile, overlap)]
    return out


def _decode_masks(entries: list[Entry], image_size: int, classes: ClassList,
                  palette: dict[tuple[int, int, int], int] | None, tile: int | None, overlap: int) -> np.ndarray:
    """Every entry's mask, checked, cut and resized (nearest), in the image cache as uint8 (N, 1, S, S)."""
    from .store import decode_folder

    last: dict[Path, np.ndarray] = {}

    def read_at(i: int, _f: Path) -> np.ndarray:
        e = entries[i]
        if e.mask not in last:  # the tiles of one scene follow each other: its mask is read once
            last.clear()
            last[e.mask] = mask_values(e.mask, e.image, classes, palette)
        return resize_mask(last[e.mask], image_size, e.window)[None]

    data, _ = decode_folder([e.mask for e in entries], lambda f: None, (1, image_size, image_size), "uint8",
                            {"image_size": image_size, "resize": "nearest", "reader": "mask", "tile": tile,
                             "overlap": overlap, "classes": classes.names, "ignore": classes.ignore_index,
                             "palette": sorted((list(k), v) for k, v in (palette or {}).items())}, read_at=read_at)
    return data


def load_mask_folder(root: Path, *, image_size: int, seed: int, val_fraction: float, max_images: int | None,
                     bands: list[str] | None = None, split_file: Path | None = None,
                     mask_palette: Path | None = None, tile: int | None = None, tile_overlap: int = 32) -> Dataset:
    """A segmentation data set from `root` (images/ + masks/ + classes), split by scene (or by
    --split FILE, whose lists name files under images/). With `tile`, every image larger than
    it is cut into tile x tile windows overlapping by `tile_overlap` px (each resized to
    `image_size`); the tiles of an image are one scene. Images and masks are decoded once into
    the image cache and served from it (masks as uint8)."""
    from .folder import _decode_any
    from .store import ImageArray, MaskArray

    if tile is not None and not 0 <= tile_overlap < tile:
        raise DataError(f"--tile-overlap {tile_overlap} must be at least 0 and less than --tile {tile}; e.g. "
                        "--tile 256 --tile-overlap 32")
    classes = read_classes(root)
    palette = read_palette(mask_palette, classes.names) if mask_palette is not None else None
    pairs = _pairs(root)
    listed = _listed_split(root, pairs, split_file) if split_file is not None else None
    if max_images is not None and listed is None and len(pairs) > max_images:
        keep = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:max_images])
        pairs = [pairs[i] for i in keep]
    entries = _entries(pairs, tile, tile_overlap)
    masks = _decode_masks(entries, image_size, classes, palette, tile, tile_overlap)
    decoded = _decode_any(root / "images", [e.image for e in entries], image_size, bands,
                          [e.window for e in entries] if tile is not None else None)
    unreadable = [e.image for e, ok in zip(entries, decoded.ok) if not ok]
    if unreadable:
        raise DataError(f"image {unreadable[0]} cannot be read; remove it (and its mask) or replace it")
    scenes = [scene_of(e.image.stem) for e in entries]
    rows, how = _split_rows(entries, scenes, listed, val_fraction, seed, split_file, tile, tile_overlap)
    _check_present(masks, rows["train"], classes, root)
    scales, band_scale, note = decoded.scales(rows["train"], seed)
    images, y = ImageArray(decoded.data, scales), MaskArray(masks)
    ds = Dataset(name=root.name, classes=classes.names, bands=decoded.bands, x_train=images.view(rows["train"]),
                 y_train=y.view(rows["train"]), x_val=images.view(rows["val"]), y_val=y.view(rows["val"]),
                 synthetic=False, source=str(root.resolve()), split=how, band_scale=band_scale, band_note=note,
                 task="segmentation", ignore_index=classes.ignore_index)
    if len(rows.get("test", [])):
        ds.x_test, ds.y_test = images.view(rows["test"]), y.view(rows["test"])
    if tile is not None:  # the whole validation scenes, for the sliding-window evaluation
        ds.val_scenes = list(dict.fromkeys((str(entries[i].image), str(entries[i].mask)) for i in rows["val"]))
    return ds


def _split_rows(entries: list[Entry], scenes: list[str], listed: dict[str, set[str]] | None, val_fraction: float,
                seed: int, split_file: Path | None, tile: int | None, overlap: int
                ) -> tuple[dict[str, np.ndarray], str]:
    cut = f"; images cut into {tile} px tiles overlapping by {overlap} px" if tile else ""
    if listed is None:
        tr, va = split_by_scene(scenes, val_fraction, seed)
        return {"train": tr, "val": va}, (f"by scene ({len(set(scenes))} scenes; tiles named SCENE_rR_cC, or cut from "
                                          f"one image, share one), val_fraction {val_fraction:g} of the tiles{cut}")
    rows = {k: np.array([i for i, e in enumerate(entries) if e.image.name in names], dtype=np.int64)
            for k, names in listed.items()}
    if "val" not in rows:
        tr, va = split_by_scene([scenes[i] for i in rows["train"]], val_fraction, seed)
        rows["train"], rows["val"] = rows["train"][tr], rows["train"][va]
    return rows, f"--split {split_file}{cut}"


def _check_present(masks: np.ndarray, train_rows: np.ndarray, classes: ClassList, root: Path) -> None:
    """Every class shows in some training mask (a class the students never see cannot be learnt)."""
    present = np.zeros(256, dtype=bool)
    for start in range(0, len(train_rows), 256):
        present[np.unique(np.asarray(masks[np.sort(train_rows[start:start + 256])]))] = True
    absent = [n for i, n in enumerate(classes.names) if not present[i]]
    if absent:
        raise DataError(f"class {absent[0]!r} appears in no training mask of {root}; add training tiles that show it "
                        "or remove it from classes.json (or mark its pixels with the ignore index)")


def _listed_split(root: Path, pairs: list[tuple[Path, Path]], split_file: Path) -> dict[str, set[str]]:
    """--split FILE for a mask folder: train/val/test lists of file names under images/."""
    import yaml

    try:
        spec = yaml.safe_load(split_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"--split {split_file} cannot be read ({exc}); pass a YAML or JSON file mapping train, val, "
                        "test to lists of image file names") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("train"), list):
        raise DataError(f"--split {split_file} must map train (and optionally val, test) to lists of image files")
    names = {img.name for img, _ in pairs}
    out = {}
    for key in ("train", "val", "test"):
        if key in spec:
            listed = {Path(str(p)).name for p in spec[key]}
            missing = sorted(listed - names)
            if missing:
                raise DataError(f"--split {split_file} lists {missing[0]}, which is not an image of {root / 'images'} "
                                "with a mask")
            out[key] = listed
    from .folder import overlap_between

    overlap_between(split_file, {k: sorted(v) for k, v in out.items()})
    return out
