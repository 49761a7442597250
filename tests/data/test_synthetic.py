import numpy as np

from edgekd.data.synthetic import BANDS, CLASSES, generate_demo, generate_tiles


def test_same_seed_same_tiles_other_seed_other_tiles():
    a, ya = generate_tiles(5, 16, seed=3)
    b, yb = generate_tiles(5, 16, seed=3)
    c, _ = generate_tiles(5, 16, seed=4)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.allclose(a, c)
    assert a.shape == (5 * len(CLASSES), len(BANDS), 16, 16)
    assert a.min() >= 0 and a.max() <= 1


def test_at_least_six_classes_with_nir_band():
    assert len(CLASSES) >= 6 and {"R", "G", "B", "NIR"} <= set(BANDS)


def test_classes_are_distinct_but_not_trivially_separable():
    x, y = generate_tiles(60, 32, seed=0)
    feats = np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1)
    tr = np.arange(len(y)) % 2 == 0
    centroids = np.stack([feats[tr & (y == c)].mean(0) for c in range(len(CLASSES))])
    pred = np.argmin(((feats[~tr, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    acc = (pred == y[~tr]).mean()
    # per-band statistics alone separate the classes well above chance (1/7) ...
    assert acc > 0.5
    # ... but not perfectly: texture and noise matter
    assert acc < 0.98
    # forest is bright in NIR, water is dark in it
    nir = BANDS.index("NIR")
    assert x[y == CLASSES.index("forest"), nir].mean() > 3 * x[y == CLASSES.index("water"), nir].mean()


def test_demo_split_is_stratified_and_labelled_synthetic():
    ds = generate_demo(samples_per_class=10, image_size=16, seed=0, val_fraction=0.2)
    assert ds.synthetic and "synthetic" in ds.source
    assert len(ds.y_val) == 2 * len(CLASSES)
    assert np.bincount(ds.y_val.numpy()).tolist() == [2] * len(CLASSES)
    assert ds.summary()["sizes"] == {"train": 8 * len(CLASSES), "val": 2 * len(CLASSES)}
