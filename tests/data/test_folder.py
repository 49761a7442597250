from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.data.folder import load_image_folder
from edgekd.errors import DataError


def _png(path: Path, color: tuple[int, int, int], size: int = 20) -> None:
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(path)


def make_folder(root: Path, classes=("Forest", "River"), n=4) -> Path:
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for k in range(n):
            _png(root / c / f"{k}.png", (40 * i, 100, 200 - 40 * i))
    return root


def test_reads_classes_resizes_and_skips_unreadable(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "River" / "broken.jpg").write_bytes(b"not an image")
    ds = load_image_folder(root, image_size=8, seed=0, val_fraction=0.25)
    assert ds.classes == ["Forest", "River"] and ds.bands == ["R", "G", "B"]
    assert tuple(ds.x_train.shape[1:]) == (3, 8, 8)
    assert len(ds.y_train) + len(ds.y_val) == 8
    assert ds.skipped_files == [str(root / "River" / "broken.jpg")]
    assert float(ds.x_train[ds.y_train == 0][:, 1].mean()) == pytest.approx(100 / 255, abs=1e-3)
    assert not ds.synthetic


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "has no class sub-folders"),
    ("file", "is not a folder"),
    ("one_class", "only one class folder"),
    ("unreadable_class", "has no readable images"),
])
def test_bad_folders_name_the_problem(tmp_path, case, message):
    root = tmp_path / "ds"
    if case == "empty":
        root.mkdir()
    elif case == "file":
        root.write_text("x")
    elif case == "one_class":
        make_folder(root, classes=("Only",))
    elif case == "unreadable_class":
        make_folder(root)
        (root / "Empty").mkdir()
        (root / "Empty" / "a.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match=message):
        load_image_folder(root, image_size=8, seed=0, val_fraction=0.25)


RSSCN7 = Path(__file__).resolve().parents[3] / "shared" / "data" / "rsscn7-64"


@pytest.mark.skipif(not RSSCN7.is_dir(), reason="real data ../shared/data/rsscn7-64 is not present")
def test_reads_real_rsscn7_subset():
    ds = load_image_folder(RSSCN7, image_size=32, seed=0, val_fraction=0.2, max_per_class=5)
    assert len(ds.classes) == 7 and "Forest" in ds.classes
    assert len(ds.y_train) + len(ds.y_val) == 35
