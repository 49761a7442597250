"""Segmentation data: images/ + masks/ folders, classes files, palettes, GeoTIFF pairs, the split
by scene, and every bad input (one line naming the file and the fix)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.data import load_dataset
from edgekd.data.masks import read_classes, scene_of, split_by_scene
from edgekd.errors import DataError

COLOURS = {0: (60, 16, 152), 1: (132, 41, 246), 2: (110, 193, 228)}


def make_mask_folder(root: Path, scenes: int = 4, tiles: int = 3, size: int = 32, classes: int = 3,
                     classes_file: str = "json") -> Path:
    """SCENE_rR_cC tiles whose masks are stripes of every class (and a few ignore pixels)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for s in range(scenes):
        for t in range(tiles):
            mask = np.repeat((np.arange(size) * classes // size + s + t) % classes, size).reshape(size, size).T
            mask = mask.astype(np.uint8)
            mask[:2, :2] = 255
            img = (np.stack([mask * 60, 255 - mask * 60, rng.integers(0, 40, (size, size))], -1)).astype(np.uint8)
            Image.fromarray(img).save(root / "images" / f"scene{s}_r0_c{t}.png")
            Image.fromarray(mask).save(root / "masks" / f"scene{s}_r0_c{t}.png")
    names = [f"class{i}" for i in range(classes)]
    if classes_file == "json":
        (root / "classes.json").write_text(json.dumps({"classes": [{"index": i, "name": n} for i, n in
                                                                   enumerate(names)], "ignore_index": 255}))
    else:
        (root / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)) + "255 ignore\n")
    return root


def hexa(c: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{v:02X}" for v in c)


def load(root: Path, **kw):
    args = dict(seed=0, val_fraction=0.25, image_size=16, samples_per_class=10, max_samples_per_class=None,
                task="segmentation")
    return load_dataset(root, **{**args, **kw})


@pytest.mark.parametrize("classes_file", ["json", "txt"])
def test_a_mask_folder_loads_split_by_scene(tmp_path: Path, classes_file: str):
    ds = load(make_mask_folder(tmp_path / "d", classes_file=classes_file))
    assert ds.task == "segmentation" and ds.classes == ["class0", "class1", "class2"] and ds.ignore_index == 255
    assert ds.x_train.shape[1:] == (3, 16, 16) and ds.y_train.shape[1:] == (16, 16)
    assert len(ds.y_train) + len(ds.y_val) == 12 and len(ds.y_val) == 3  # one whole scene of 3 tiles
    assert set(np.unique(ds.y_train.numpy())) <= {0, 1, 2, 255}  # nearest resize: no blended values
    assert "by scene" in ds.split


def test_split_by_scene_keeps_every_scene_on_one_side():
    scenes = [scene_of(f"t{g}_p{i}_r{r}_c{c}") for g in range(3) for i in range(3) for r in range(2) for c in range(2)]
    tr, va = split_by_scene(scenes, 0.2, seed=1)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(scenes)
    assert not {scenes[i] for i in tr} & {scenes[i] for i in va}
    with pytest.raises(DataError, match="one scene"):
        split_by_scene(["a", "a"], 0.2, 0)


def test_colour_masks_need_a_palette_which_converts_them(tmp_path: Path):
    root = make_mask_folder(tmp_path / "d")
    for m in (root / "masks").iterdir():
        idx = np.asarray(Image.open(m))
        rgb = np.zeros((*idx.shape, 3), dtype=np.uint8)
        for k, c in COLOURS.items():
            rgb[idx == k] = c
        Image.fromarray(rgb).save(m)  # ignore pixels become black
    with pytest.raises(DataError, match="--mask-palette"):
        load(root)
    palette = tmp_path / "palette.json"
    palette.write_text(json.dumps({**{hexa(c): k for k, c in COLOURS.items()}, "#000000": 255}))
    ds = load(root, mask_palette=palette)
    assert set(np.unique(ds.y_train.numpy())) == {0, 1, 2, 255}
    palette.write_text(json.dumps({hexa(c): k for k, c in COLOURS.items()}))  # black unmapped
    with pytest.raises(DataError, match="#000000"):
        load(root, mask_palette=palette)


@pytest.mark.parametrize("case, match", [
    ("missing_mask", "no mask for"),
    ("mask_size", "its image"),
    ("bad_value", "neither a class"),
    ("absent_class", "appears in no training mask"),
    ("empty", "holds no images"),
    ("no_classes", "classes.txt"),
    ("one_scene", "one scene"),
])
def test_bad_mask_folders_are_one_line_naming_the_fix(tmp_path: Path, case: str, match: str):
    root = make_mask_folder(tmp_path / "d", classes=3)
    first = root / "masks" / "scene0_r0_c0.png"
    if case == "missing_mask":
        first.unlink()
    elif case == "mask_size":
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(first)
    elif case == "bad_value":
        Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(first)
    elif case == "absent_class":
        (root / "classes.txt").write_text("0 a\n1 b\n2 c\n3 never\n")
        (root / "classes.json").unlink()
    elif case == "empty":
        for f in (root / "images").iterdir():
            f.unlink()
    elif case == "no_classes":
        (root / "classes.json").unlink()
    elif case == "one_scene":
        for f in [*(root / "images").iterdir(), *(root / "masks").iterdir()]:
            if not f.name.startswith("scene0"):
                f.unlink()
    with pytest.raises(DataError, match=match) as exc:
        load(root)
    assert "\n" not in str(exc.value)
    if case in ("missing_mask", "mask_size", "bad_value"):
        assert "scene0_r0_c0" in str(exc.value)  # names the file


def test_geotiff_pairs_must_share_the_grid(tmp_path: Path):
    import rasterio
    from rasterio.transform import from_origin

    root = tmp_path / "g"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("0 land\n1 water\n")
    rng = np.random.default_rng(0)
    for s in range(3):
        t = from_origin(500000 + 1000 * s, 4000000, 10, 10)
        img = rng.integers(0, 3000, (4, 16, 16)).astype(np.uint16)
        mask = (np.arange(16)[None, :] >= 8).repeat(16, 0).astype(np.uint8)
        with rasterio.open(root / "images" / f"s{s}.tif", "w", driver="GTiff", width=16, height=16, count=4,
                           dtype="uint16", crs="EPSG:32633", transform=t) as dst:
            dst.write(img)
        with rasterio.open(root / "masks" / f"s{s}.tif", "w", driver="GTiff", width=16, height=16, count=1,
                           dtype="uint8", crs="EPSG:32633", transform=t) as dst:
            dst.write(mask[None])
    ds = load(root, val_fraction=0.3)
    assert ds.in_channels == 4 and ds.band_scale is not None and ds.y_train.shape[1:] == (16, 16)
    with rasterio.open(root / "masks" / "s1.tif", "r+") as dst:
        dst.transform = from_origin(0, 0, 10, 10)
    with pytest.raises(DataError, match="s1.tif.*geotransform"):
        load(root, val_fraction=0.3)


def test_classes_file_with_the_ignore_line(tmp_path: Path):
    (tmp_path / "classes.txt").write_text("0 building\n1 land\n254 unknown\n")
    c = read_classes(tmp_path)
    assert c.names == ["building", "land"] and c.ignore_index == 254


def test_the_demo_set_paints_masks():
    ds = load_dataset(None, seed=0, val_fraction=0.2, image_size=24, samples_per_class=6, max_samples_per_class=None,
                      task="segmentation")
    assert ds.synthetic and ds.y_train.shape[1:] == (24, 24) and ds.x_train.shape[1] == 4
    assert len(np.unique(ds.y_train.numpy())) == 7
    again = load_dataset(None, seed=0, val_fraction=0.2, image_size=24, samples_per_class=6,
                         max_samples_per_class=None, task="segmentation")
    assert np.array_equal(again.y_val.numpy(), ds.y_val.numpy())
