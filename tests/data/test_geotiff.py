"""Multispectral GeoTIFF folders: band selection by name and index, per-band scaling of 16-bit
data from the training split, mismatched files rejected, and a run end to end on chosen bands."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from edgekd.data.folder import load_image_folder
from edgekd.data.geotiff import SENTINEL2_13
from edgekd.data.store import as_tensor
from edgekd.errors import DataError

from ..conftest import run_cli

NAMES = ["blue", "green", "red", "nir", "swir"]


def write_tiff(path: Path, data: np.ndarray, names: list[str] | None) -> None:
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=count, dtype=data.dtype,
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4500000)) as dst:
        dst.write(data)
        if names:
            for i, n in enumerate(names, 1):
                dst.set_band_description(i, n)


def tiff_folder(root: Path, n: int = 6, bands: int = 5, names: list[str] | None = NAMES, size: int = 12) -> Path:
    """Two classes told apart by the 4th band (nir) only; uint16 reflectance-like values."""
    rng = np.random.default_rng(0)
    for label, cls in enumerate(["crop", "bare"]):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            data = rng.integers(800, 1200, (bands, size, size)).astype(np.uint16)
            data[min(3, bands - 1)] += np.uint16(2500 * (1 - label))  # crops reflect in the NIR
            write_tiff(root / cls / f"{i}.tif", data, names)
    return root


def test_bands_by_name_and_index_with_per_band_scaling(tmp_path):
    root = tiff_folder(tmp_path / "ms")
    ds = load_image_folder(root, image_size=8, seed=0, val_fraction=0.34, bands=["nir", "red", "green"])
    assert ds.bands == ["nir", "red", "green"] and ds.in_channels == 3 and ds.image_size == 8
    assert ds.band_scale is not None and len(ds.band_scale) == 3
    assert ds.band_scale[0] > 3000 > 1300 > ds.band_scale[1]  # the NIR band's 99th percentile holds the crops
    x = as_tensor(ds.x_train)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert "99th percentile" in ds.band_note and "uint16" in ds.band_note
    by_index = load_image_folder(root, image_size=8, seed=0, val_fraction=0.34, bands=["4", "3", "2"])
    assert by_index.bands == ds.bands and np.allclose(by_index.x_train.numpy(), ds.x_train.numpy())
    every = load_image_folder(root, image_size=8, seed=0, val_fraction=0.34)
    assert every.bands == NAMES


def test_band_names_from_a_known_layout_or_numbered(tmp_path):
    s2 = load_image_folder(tiff_folder(tmp_path / "s2", n=3, bands=13, names=None), image_size=8, seed=0,
                           val_fraction=0.34, bands=["B04", "B03", "B02", "B08"])
    assert s2.bands == ["B04", "B03", "B02", "B08"] and SENTINEL2_13[7] == "B08"
    plain = load_image_folder(tiff_folder(tmp_path / "p", n=3, bands=4, names=None), image_size=8, seed=0,
                              val_fraction=0.34)
    assert plain.bands == ["b1", "b2", "b3", "b4"]


def test_bad_band_requests_and_mismatched_files(tmp_path):
    root = tiff_folder(tmp_path / "ms", n=3)
    with pytest.raises(DataError, match=r"--bands B99: no band of that name; the files have blue, green"):
        load_image_folder(root, image_size=8, seed=0, val_fraction=0.34, bands=["B99"])
    with pytest.raises(DataError, match=r"--bands 9: the files have 5 bands"):
        load_image_folder(root, image_size=8, seed=0, val_fraction=0.34, bands=["9"])
    odd = root / "bare" / "odd.tif"
    write_tiff(odd, np.zeros((3, 12, 12), np.uint16), None)
    with pytest.raises(DataError, match=r"odd.tif has 3 bands of uint16, the other files 5 of uint16"):
        load_image_folder(root, image_size=8, seed=0, val_fraction=0.34)
    rgb = tmp_path / "rgb"
    for c in ("a", "b"):
        (rgb / c).mkdir(parents=True)
        for i in range(2):
            from PIL import Image

            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb / c / f"{i}.png")
    with pytest.raises(DataError, match="--bands selects bands of multispectral GeoTIFFs"):
        load_image_folder(rgb, image_size=8, seed=0, val_fraction=0.5, bands=["1"])


def test_geotiff_splits_from_a_file_and_from_folders(tmp_path):
    root = tiff_folder(tmp_path / "ms", n=6)
    split = tmp_path / "split.yaml"
    split.write_text("train: [crop/0.tif, crop/1.tif, crop/2.tif, bare/0.tif, bare/1.tif, bare/2.tif]\n"
                     "val: [crop/3.tif, bare/3.tif]\ntest: [bare/4.tif, bare/5.tif, crop/4.tif, crop/5.tif]\n")
    ds = load_image_folder(root, image_size=8, seed=0, val_fraction=0.34, bands=["nir", "red"], split_file=split)
    assert ds.bands == ["nir", "red"] and ds.split.startswith("--split")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (6, 2, 4) and ds.x_test.shape == (4, 2, 8, 8)
    assert ds.band_scale is not None and ds.band_scale[0] > 3000 and "99th percentile" in ds.band_note
    # the same files as train/ val/ test/ folders give the same arrays
    folders = tmp_path / "folders"
    for name, files in (("train", [0, 1, 2]), ("val", [3]), ("test", [4, 5])):
        for cls in ("crop", "bare"):
            (folders / name / cls).mkdir(parents=True)
            for i in files:
                (folders / name / cls / f"{i}.tif").write_bytes((root / cls / f"{i}.tif").read_bytes())
    same = load_image_folder(folders, image_size=8, seed=0, val_fraction=0.34, bands=["nir", "red"])
    assert same.classes == ["bare", "crop"] == ds.classes and same.band_scale == ds.band_scale
    assert np.array_equal(as_tensor(same.x_test).numpy(), as_tensor(ds.x_test).numpy())
    assert torch.equal(same.y_test, ds.y_test)


@pytest.mark.slow
def test_a_run_on_chosen_bands_records_them_and_their_scaling(tmp_path):
    root = tiff_folder(tmp_path / "ms", n=8)
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--data", str(root), "--bands", "nir,red,green,blue",
                   "--image-size", "8", "--out", str(out), "--quiet", "--no-baseline", "--students", "edgenet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["dataset"]["bands"] == ["nir", "red", "green", "blue"] and len(r["dataset"]["band_scale"]) == 4
    onnx_export = next(e for e in r["exports"] if e["format"] == "onnx")
    model = onnx.load(str(out / onnx_export["path"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["bands"] == "nir,red,green,blue" and len(meta["band_scale"].split(",")) == 4
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 4
