"""Detection data: COCO and YOLO folders, letterboxing, tiles, and every bad input refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data.boxes import load_box_folder, window_boxes, windows
from edgekd.data.dataset import load_dataset
from edgekd.data.store import ImageArray, as_tensor
from edgekd.errors import DataError
from tests.conftest import run_cli

CATS = [{"id": 3, "name": "ship"}, {"id": 7, "name": "plane"}]


def make_coco(root: Path, n: int = 6, w: int = 128, h: int = 64, extra: list[dict] | None = None) -> Path:
    """n images of w x h; image i holds a ship at x = 10 + 4 i and a plane; the last one is a negative."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), 40 * (i % 5), np.uint8)).save(root / "images" / f"im{i}.png")
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": w, "height": h})
        if i < n - 1:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 3, "bbox": [10 + 4 * i, 8, 20, 10],
                         "iscrowd": 0})
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 7, "bbox": [60, 20, 30, 30],
                         "iscrowd": 0})
    anns += extra or []
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    return root


def make_yolo(root: Path, n: int = 4) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("car\ntank\n")
    for i in range(n):
        Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(root / "images" / f"t{i}.jpg")
        (root / "labels" / f"t{i}.txt").write_text("0 0.5 0.5 0.1 0.2\n1 0.25 0.25 0.1 0.1\n")
    return root


def test_coco_boxes_are_letterboxed_with_their_images(tmp_path):
    ds = load_box_folder(make_coco(tmp_path / "d"), image_size=64, seed=0, val_fraction=0.34, max_images=None)
    assert ds.task == "detection" and ds.classes == ["ship", "plane"]  # category ids 3, 7 -> 0, 1 by id order
    assert len(ds.y_train) + len(ds.y_val) == 6  # the negative is kept
    y = torch.cat([ds.y_train, ds.y_val])
    x = torch.cat([as_tensor(ds.x_train), as_tensor(ds.x_val)])  # served from the image cache
    # 128 x 64 scaled by 0.5 to 64 x 32, padded at the bottom: rows 32.. are padding
    assert x.shape[-2:] == (64, 64) and float(x[:, :, 32:].abs().max()) == 0.0
    ships = y[y[..., 0] == 0]
    # [10 + 4i, 8, 20, 10] (x, y, w, h) at half scale: x1 = 5 + 2i, y1 = 4, x2 = x1 + 10, y2 = 9
    assert ships.shape[0] == 5 and sorted(ships[:, 1].tolist()) == [5.0, 7.0, 9.0, 11.0, 13.0]
    assert (ships[:, 2] == 4).all() and (ships[:, 3] - ships[:, 1] == 10).all() and (ships[:, 4] == 9).all()
    assert int(((y[..., 0] >= 0).sum(1) == 0).sum()) == 1  # one image without boxes
    assert "every box inside" in ds.band_note


def test_detection_images_are_decoded_once_into_the_image_cache(tmp_path):
    """The letterboxed windows live in the image cache as uint8 and are served from it; loading
    the same folder again reads them back instead of decoding, and a changed file decodes anew."""
    root = make_coco(tmp_path / "d")
    a = load_box_folder(root, image_size=64, seed=0, val_fraction=0.34, max_images=None)
    assert isinstance(a.x_train, ImageArray) and a.x_train.data.dtype == np.uint8
    b = load_box_folder(root, image_size=64, seed=0, val_fraction=0.34, max_images=None)
    assert b.x_train.data.filename == a.x_train.data.filename
    torch.testing.assert_close(as_tensor(b.x_train), as_tensor(a.x_train))
    Image.fromarray(np.full((64, 128, 3), 200, np.uint8)).save(root / "images" / "im0.png")
    c = load_box_folder(root, image_size=64, seed=0, val_fraction=0.34, max_images=None)
    assert c.x_train.data.filename != a.x_train.data.filename


def test_boxes_outside_are_clipped_or_dropped_and_counted(tmp_path):
    extra = [{"id": 90, "image_id": 1, "category_id": 3, "bbox": [120, 50, 20, 20], "iscrowd": 0},  # partly out
             {"id": 91, "image_id": 2, "category_id": 3, "bbox": [200, 10, 5, 5], "iscrowd": 0},  # wholly out
             {"id": 92, "image_id": 2, "category_id": 7, "bbox": [5, 5, 0, 8], "iscrowd": 0}]  # no area
    ds = load_box_folder(make_coco(tmp_path / "d", extra=extra), image_size=64, seed=0, val_fraction=0.34,
                         max_images=None)
    assert "1 boxes partly outside their image clipped, 2 of no area or wholly outside dropped" in ds.band_note
    assert "im0.png" in ds.band_note and "im1.png" in ds.band_note
    y = torch.cat([ds.y_train, ds.y_val])
    assert float(y[..., 3].max()) <= 64 and float(y[..., 4].max()) <= 32  # clipped to the image (half scale)


def test_the_log_says_which_boxes_were_clipped_or_dropped(tmp_path):
    extra = [{"id": 91, "image_id": 2, "category_id": 3, "bbox": [200, 10, 5, 5], "iscrowd": 0}]
    root = make_coco(tmp_path / "d", extra=extra)
    proc = run_cli("optimize", "--data", str(root), "--preset", "smoke", "--image-size", "64", "--teacher-epochs",
                   "1", "--student-epochs", "1", "--export-formats", "onnx", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "1 of no area or wholly outside dropped (in im1.png)" in re.sub(r"\s+", " ", proc.stdout)


def test_crowd_regions_are_kept_apart_from_the_targets(tmp_path):
    extra = [{"id": 90, "image_id": 1, "category_id": 7, "bbox": [0, 0, 40, 40], "iscrowd": 1}]
    ds = load_box_folder(make_coco(tmp_path / "d", extra=extra), image_size=64, seed=0, val_fraction=0.34,
                         max_images=None)
    y = torch.cat([ds.y_train, ds.y_val])
    assert int((y[..., 0] == -3).sum()) == 1  # crowd of class 1 (plane): -2 - 1


def test_yolo_labels_load(tmp_path):
    ds = load_dataset(make_yolo(tmp_path / "y"), seed=0, val_fraction=0.25, image_size=64, samples_per_class=0,
                      max_samples_per_class=None, task="detection")
    y = torch.cat([ds.y_train, ds.y_val])
    # 200 x 100 -> scale 0.32; car centred (100, 50) size 20 x 20 px -> [90, 40, 110, 60] * 0.32
    car = y[0][y[0, :, 0] == 0][0]
    assert torch.allclose(car[1:], torch.tensor([28.8, 12.8, 35.2, 19.2]), atol=1e-4)
    assert ds.classes == ["car", "tank"]


@pytest.mark.parametrize("case, expect", [
    ("unknown_category", "category_id 99"),
    ("missing_image_id", "image_id 77"),
    ("missing_file", "im2.png"),
    ("yolo_line", "t1.txt line 2"),
    ("yolo_class", "has class 5"),
    ("mixed", "keep one label format"),
])
def test_bad_detection_inputs_name_the_file_and_the_fix(tmp_path, case, expect):
    root = tmp_path / "d"
    if case.startswith("yolo"):
        make_yolo(root)
        line = "0 0.5 oops 0.1 0.2" if case == "yolo_line" else "5 0.5 0.5 0.1 0.2"
        (root / "labels" / "t1.txt").write_text(f"0 0.5 0.5 0.1 0.2\n{line}\n")
    else:
        extra = {"unknown_category": [{"id": 90, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]}],
                 "missing_image_id": [{"id": 90, "image_id": 77, "category_id": 3, "bbox": [1, 1, 2, 2]}]}.get(case)
        make_coco(root, extra=extra)
        if case == "missing_file":
            (root / "images" / "im2.png").unlink()
        if case == "mixed":
            (root / "labels").mkdir()
    with pytest.raises(DataError, match=expect):
        load_dataset(root, seed=0, val_fraction=0.25, image_size=64, samples_per_class=0, max_samples_per_class=None,
                     task="detection")


def test_bad_detection_input_exits_2_and_writes_nothing(tmp_path):
    root = make_coco(tmp_path / "d", extra=[{"id": 90, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]}])
    out = tmp_path / "run"
    proc = run_cli("optimize", "--data", str(root), "--preset", "smoke", "--image-size", "64", "--out", str(out))
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "category_id 99" in lines[0] and "annotations.json" in lines[0]
    assert not out.exists()
    proc = run_cli("optimize", "--task", "detection", "--image-size", "48", "--preset", "smoke", "--out", str(out))
    assert proc.returncode == 2 and "multiple of 32" in proc.stderr and not out.exists()
    proc = run_cli("optimize", "--task", "detection", "--kd", "response", "--preset", "smoke", "--out", str(out))
    assert proc.returncode == 2 and "response does not apply to detection" in proc.stderr and not out.exists()


def test_an_object_cut_by_a_tile_edge_is_kept_where_most_of_it_lies():
    from edgekd.data.boxes import Boxes

    wins = windows(300, 100, tile=128, overlap=28)  # steps of 100: x = 0, 100, 172 (flush with the edge)
    assert [w[0] for w in wins] == [0, 100, 172] and all(w[2:] == (128, 100) for w in wins)
    b = Boxes(np.array([0]), np.array([[110.0, 10.0, 140.0, 30.0]], np.float32))  # x 110..140
    seen = [window_boxes(b, w, 1.0) for w in wins]
    assert [len(s) for s in seen] == [1, 1, 0]  # 18 of 30 px inside the first tile (>= half), all in the second
    assert seen[0][0, 1:].tolist() == [110.0, 10.0, 128.0, 30.0] and seen[1][0, 1:].tolist() == [10.0, 10.0, 40.0, 30.0]
