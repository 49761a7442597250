"""Large scenes: the tile grid, tiles cut at load time (one scene per image, on one side of the
split), and sliding-window prediction with overlap blending."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import load_dataset
from edgekd.data.masks import tile_grid
from edgekd.errors import DataError
from edgekd.tasks.scenes import blend_weight, ms_per_megapixel, predict_scene


@pytest.mark.parametrize("h, w, tile, overlap", [(100, 100, 32, 8), (64, 97, 32, 0), (256, 300, 256, 32),
                                                 (20, 50, 32, 8)])
def test_the_tile_grid_covers_the_image_with_the_overlap(h, w, tile, overlap):
    grid = tile_grid(h, w, tile, overlap)
    cover = np.zeros((h, w), dtype=int)
    for top, left, side in grid:
        assert top + side <= h and left + side <= w
        cover[top:top + side, left:left + side] += 1
    assert cover.min() >= 1
    if h > tile and w > tile:
        assert all(s == tile for _, _, s in grid)
        tops = sorted({t for t, _, _ in grid})
        assert all(b - a <= tile - overlap for a, b in zip(tops, tops[1:]))  # neighbours overlap by >= overlap


def test_a_stitched_prediction_equals_the_whole_image_one_for_a_translation_equivariant_model():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)  # translation-equivariant, no padding effects
    image = torch.rand(3, 90, 70)
    with torch.no_grad():
        whole = model(image[None])[0]
    stitched = predict_scene(model, image, tile=32, overlap=8, image_size=32)
    assert stitched.shape == whole.shape
    assert torch.allclose(stitched, whole, atol=1e-5)


def test_blending_weights_ramp_over_the_overlap_and_never_vanish():
    w = blend_weight(32, 8)
    assert float(w.min()) > 0 and float(w[16, 16]) == 1.0 and float(w[0, 16]) < float(w[4, 16]) < 1.0
    assert torch.equal(blend_weight(8, 0), torch.ones(8, 8))


def test_scene_cost_counts_the_overlap_again():
    assert ms_per_megapixel(2.0, 256) == pytest.approx(2.0 * 1e6 / 256**2)
    assert ms_per_megapixel(2.0, 256, 32) == pytest.approx(2.0 * 1e6 / 224**2)


def test_large_scenes_are_cut_into_tiles_that_stay_on_one_side(tmp_path: Path):
    root = tmp_path / "scenes"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("0 land\n1 water\n")
    for s in range(3):
        mask = np.zeros((80, 100), dtype=np.uint8)
        mask[:, 50:] = 1
        img = np.stack([mask * 200, 255 - mask * 200, np.full_like(mask, 30)], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"scene{s}.png")
        Image.fromarray(mask).save(root / "masks" / f"scene{s}.png")
    ds = load_dataset(root, seed=0, val_fraction=0.3, image_size=16, samples_per_class=10, max_samples_per_class=None,
                      task="segmentation", tile=32, tile_overlap=8)
    per_scene = len(tile_grid(80, 100, 32, 8))
    assert len(ds.y_train) + len(ds.y_val) == 3 * per_scene and len(ds.y_val) == per_scene
    assert ds.x_train.shape[1:] == (3, 16, 16) and ds.y_train.shape[1:] == (16, 16)
    assert "32 px tiles overlapping by 8 px" in ds.split
    # a tile's image and mask are the same window: water where the image is red
    x, y = ds.x_train[:], ds.y_train[:]
    red = x[:, 0] > 0.5
    assert torch.equal(red, y == 1)
    with pytest.raises(DataError, match="--tile-overlap"):
        load_dataset(root, seed=0, val_fraction=0.3, image_size=16, samples_per_class=10, max_samples_per_class=None,
                     task="segmentation", tile=32, tile_overlap=32)
