"""The user's own split (train/ val/ test/ folders) is honoured; the held-out test split is
evaluated once at the end, per class, for the teacher and the selected student."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.data.folder import load_image_folder
from edgekd.errors import DataError

from ..conftest import run_cli


def _tiles(root: Path, classes: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i, (c, n) in enumerate(classes.items()):
        (root / c).mkdir(parents=True)
        for k in range(n):
            tile = np.clip(60 * i + rng.normal(60, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(tile).save(root / c / f"{k}.png")


@pytest.fixture()
def split_folder(tmp_path) -> Path:
    root = tmp_path / "data"
    _tiles(root / "train", {"a": 12, "b": 12, "c": 12}, 0)
    _tiles(root / "val", {"a": 3, "b": 4, "c": 5}, 1)
    _tiles(root / "test", {"a": 2, "b": 2, "c": 6}, 2)
    return root


def test_train_val_test_folders_are_honoured(split_folder):
    ds = load_image_folder(split_folder, image_size=16, seed=0, val_fraction=0.5)
    assert ds.classes == ["a", "b", "c"]
    assert len(ds.y_train) == 36 and len(ds.y_val) == 12 and ds.y_test is not None and len(ds.y_test) == 10
    assert ds.y_val.tolist().count(2) == 5 and ds.y_test.tolist().count(2) == 6  # exactly the folders' images
    assert "train/val/test" in ds.split and ds.summary()["sizes"]["test"] == 10


def test_without_val_folder_validation_is_drawn_from_train(tmp_path):
    root = tmp_path / "d"
    _tiles(root / "train", {"a": 10, "b": 10}, 0)
    _tiles(root / "test", {"a": 3, "b": 3}, 1)
    ds = load_image_folder(root, image_size=16, seed=0, val_fraction=0.2)
    assert len(ds.y_train) + len(ds.y_val) == 20 and len(ds.y_test) == 6


def test_a_class_only_the_test_split_has_is_refused(tmp_path):
    root = tmp_path / "d"
    _tiles(root / "train", {"a": 4, "b": 4}, 0)
    _tiles(root / "test", {"a": 2, "z": 2}, 1)
    with pytest.raises(DataError, match=r"classes that .*train lacks \(z\)"):
        load_image_folder(root, image_size=16, seed=0, val_fraction=0.2)


def test_a_split_file_is_honoured_and_checked(tmp_path):
    import yaml

    root = tmp_path / "flat"
    _tiles(root, {"a": 6, "b": 6}, 0)
    spec = {"train": [f"{c}/{i}.png" for c in "ab" for i in range(4)], "val": ["a/4.png", "b/4.png"],
            "test": ["a/5.png", "b/5.png"]}
    split = tmp_path / "split.yaml"
    split.write_text(yaml.safe_dump(spec))
    ds = load_image_folder(root, image_size=16, seed=0, val_fraction=0.5, split_file=split)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (8, 2, 2) and ds.classes == ["a", "b"]
    assert ds.y_test.tolist() == [0, 1] and "--split" in ds.split
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**spec, "test": ["a/99.png"]}))
    with pytest.raises(DataError, match=r"lists 1 file\(s\) that do not exist .*a/99.png"):
        load_image_folder(root, image_size=16, seed=0, val_fraction=0.5, split_file=bad)
    bad.write_text(yaml.safe_dump({"training": spec["train"]}))
    with pytest.raises(DataError, match="must map train"):
        load_image_folder(root, image_size=16, seed=0, val_fraction=0.5, split_file=bad)
    _tiles(root / "extra", {"z": 2}, 3)
    bad.write_text(yaml.safe_dump({**spec, "test": ["extra/z/0.png"]}))
    with pytest.raises(DataError, match=r"val/test hold classes that train lacks \(z\)"):
        load_image_folder(root, image_size=16, seed=0, val_fraction=0.5, split_file=bad)


@pytest.mark.slow
def test_the_test_split_is_reported_per_class_and_apart_from_validation(split_folder, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--data", str(split_folder), "--image-size", "16", "--out",
                   str(out), "--quiet", "--students", "edgenet", "--no-baseline")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["dataset"]["sizes"] == {"train": 36, "val": 12, "test": 10}
    models = {m["model"]: m for m in r["per_class"]}
    assert set(models) == {"teacher", r["selected"]}
    for m in models.values():
        assert m["validation"]["n"] == 12 and m["test"]["n"] == 10 and m["test"]["split"] == "test"
        assert [c["support"] for c in m["test"]["classes"]] == [2, 2, 6]
        assert sum(map(sum, m["test"]["confusion"])) == 10
    md = (out / "report.md").read_text()
    assert "test split (10 images)" in md and "## Per class" in md
    assert 'id="plot-confusion"' in (out / "report.html").read_text()
