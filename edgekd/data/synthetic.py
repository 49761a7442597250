"""The built-in demo data set: synthetic multispectral land-cover tiles, generated from a seed.

Bands R, G, B, NIR (reflectance in [0, 1]). Seven classes with class-typical spectra and
textures; every tile gets a random rotation/flip, illumination, per-band gain, sensor noise,
and, for some tiles, thin haze or a patch of another class, so that a small CNN cannot reach
100% trivially. No download: the same seed always gives the same tiles."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import Dataset, make_dataset

BANDS = ["R", "G", "B", "NIR"]
CLASSES = ["water", "forest", "grassland", "cropland", "urban", "bare_soil", "cloud"]

# typical surface reflectance per band (R, G, B, NIR)
SPECTRA = {
    "water": [0.05, 0.07, 0.09, 0.03],
    "forest": [0.04, 0.08, 0.04, 0.38],
    "grassland": [0.09, 0.14, 0.07, 0.33],
    "crop": [0.07, 0.13, 0.06, 0.42],
    "soil": [0.24, 0.19, 0.14, 0.30],
    "road": [0.14, 0.14, 0.15, 0.16],
    "roof": [0.30, 0.28, 0.28, 0.30],
    "cloud": [0.68, 0.69, 0.72, 0.66],
}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [0, 1]: texture with a `size / cells` grain."""
    grid = torch.from_numpy(rng.random((1, 1, cells, cells), dtype=np.float32))
    up = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def _spectrum(rng: np.random.Generator, key: str, jitter: float = 0.25) -> np.ndarray:
    base = np.array(SPECTRA[key], dtype=np.float32)
    return base * (1 + jitter * rng.uniform(-1, 1, size=4).astype(np.float32))


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _paint(rng: np.random.Generator, cls: str, s: int) -> np.ndarray:
    """One clean tile of class `cls`, shape (4, s, s)."""
    yy, xx = _coords(s)
    if cls == "water":
        waves = np.sin((xx * np.cos(a := rng.uniform(0, np.pi)) + yy * np.sin(a)) * rng.uniform(0.3, 0.8))
        tex = 0.5 + 0.15 * waves + 0.2 * _smooth_noise(rng, s, 3)
        img = _spectrum(rng, "water")[:, None, None] * (0.8 + 0.4 * tex)
    elif cls == "forest":
        crowns = _smooth_noise(rng, s, max(4, s // 3))
        img = _spectrum(rng, "forest")[:, None, None] * (0.5 + 0.9 * crowns)
    elif cls == "grassland":
        tex = 0.85 + 0.3 * _smooth_noise(rng, s, max(2, s // 8))
        img = _spectrum(rng, "grassland")[:, None, None] * tex
    elif cls == "cropland":
        a = rng.uniform(0, np.pi)
        period = rng.uniform(4, 10)
        phase = (xx * np.cos(a) + yy * np.sin(a)) / period
        stripes = (np.sin(2 * np.pi * phase) > rng.uniform(-0.3, 0.3)).astype(np.float32)
        crop, soil = _spectrum(rng, "crop"), _spectrum(rng, "soil")
        img = crop[:, None, None] * stripes + soil[:, None, None] * (1 - stripes)
        img *= 0.9 + 0.2 * _smooth_noise(rng, s, 4)
    elif cls == "urban":
        block = int(rng.integers(6, 11))
        street = max(1, block // 4)
        off_y, off_x = rng.integers(0, block, size=2)
        on_street = (((yy + off_y) % block) < street) | (((xx + off_x) % block) < street)
        road, roof = _spectrum(rng, "road"), _spectrum(rng, "roof")
        # each block gets its own roof brightness
        by, bx = ((yy + off_y) // block).astype(int), ((xx + off_x) // block).astype(int)
        shade = rng.uniform(0.6, 1.4, size=(by.max() + 1, bx.max() + 1)).astype(np.float32)[by, bx]
        img = np.where(on_street[None], road[:, None, None], roof[:, None, None] * shade[None])
    elif cls == "bare_soil":
        tex = 0.7 + 0.6 * _smooth_noise(rng, s, max(3, s // 4)) * _smooth_noise(rng, s, max(6, s // 2))
        img = _spectrum(rng, "soil")[:, None, None] * tex
    elif cls == "cloud":
        under = _paint(rng, CLASSES[int(rng.integers(0, len(CLASSES) - 1))], s)
        alpha = np.clip(0.45 + 0.8 * (_smooth_noise(rng, s, 3) - 0.3), 0.3, 1.0)
        img = under * (1 - alpha) + _spectrum(rng, "cloud", 0.1)[:, None, None] * alpha
    else:  # pragma: no cover - CLASSES and this function are kept in step
        raise ValueError(cls)
    return img.astype(np.float32)


def _augment(rng: np.random.Generator, img: np.ndarray, label: int, s: int) -> np.ndarray:
    cloud = CLASSES.index("cloud")
    if label != cloud and rng.random() < 0.5:  # a patch of another class (mixed pixels)
        other = int(rng.integers(0, len(CLASSES) - 1))
        if other != label:
            ph, pw = rng.integers(s // 4, (3 * s) // 5 + 1, size=2)
            y0, x0 = rng.integers(0, s - ph + 1), rng.integers(0, s - pw + 1)
            img[:, y0:y0 + ph, x0:x0 + pw] = _paint(rng, CLASSES[other], s)[:, y0:y0 + ph, x0:x0 + pw]
    if label != cloud and rng.random() < 0.4:  # thin haze, which looks a little like cloud
        alpha = rng.uniform(0.1, 0.45) * _smooth_noise(rng, s, 2) + 0.05
        img = img * (1 - alpha) + _spectrum(rng, "cloud", 0.1)[:, None, None] * alpha
    img = np.rot90(img, k=int(rng.integers(0, 4)), axes=(1, 2))
    if rng.random() < 0.5:
        img = img[:, :, ::-1]
    img = img * rng.uniform(0.6, 1.4)  # illumination (sun angle, exposure)
    img = img * (1 + 0.15 * rng.uniform(-1, 1, size=(4, 1, 1)))  # per-band calibration gain
    img = img + rng.normal(0, rng.uniform(0.01, 0.06), size=img.shape)  # sensor noise
    return np.clip(img, 0, 1).astype(np.float32)


def generate_tiles(samples_per_class: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): x of shape (N, 4, S, S) float32 in [0, 1], y class indices; N = 7 * samples_per_class."""
    rng = np.random.default_rng(seed)
    n = samples_per_class * len(CLASSES)
    x = np.empty((n, len(BANDS), image_size, image_size), dtype=np.float32)
    y = np.repeat(np.arange(len(CLASSES)), samples_per_class)
    for i, label in enumerate(y):
        x[i] = _augment(rng, _paint(rng, CLASSES[label], image_size), int(label), image_size)
    return x, y


def generate_demo(*, samples_per_class: int, image_size: int, seed: int, val_fraction: float) -> Dataset:
    x, y = generate_tiles(samples_per_class, image_size, seed)
    return make_dataset(
        name="edgekd-demo-landcover", classes=list(CLASSES), bands=list(BANDS), x=x, y=y,
        val_fraction=val_fraction, seed=seed, synthetic=True,
        source=f"synthetic: generated by edgekd from seed {seed} ({samples_per_class} tiles per class)",
    )


def _paint_scene(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """One tile of 2-4 land-cover regions (a Voronoi partition with noisy borders): the image
    (4, s, s) and the mask of the classes it painted (s, s)."""
    n = int(rng.integers(2, 5))
    labels = rng.choice(len(CLASSES), size=n, replace=False)
    yy, xx = _coords(s)
    seeds = rng.uniform(0, s, size=(n, 2)).astype(np.float32)
    wobble = (_smooth_noise(rng, s, 4) - 0.5) * s * 0.3
    dist = np.stack([np.hypot(yy - sy, xx - sx) + wobble * (i % 2 * 2 - 1) for i, (sy, sx) in enumerate(seeds)])
    region = dist.argmin(0)
    mask = labels[region].astype(np.uint8)
    img = np.zeros((len(BANDS), s, s), dtype=np.float32)
    for i, label in enumerate(labels):
        inside = region == i
        img[:, inside] = _paint(rng, CLASSES[int(label)], s)[:, inside]
    return img, mask


def generate_scenes(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, masks): `n` tiles (N, 4, S, S) in [0, 1] and their per-pixel classes (N, S, S) uint8,
    with the demo set's haze, rotations, illumination, per-band gain and noise."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, len(BANDS), image_size, image_size), dtype=np.float32)
    masks = np.empty((n, image_size, image_size), dtype=np.uint8)
    for i in range(n):
        img, mask = _paint_scene(rng, image_size)
        if rng.random() < 0.3:  # thin haze: the labels stay
            alpha = rng.uniform(0.1, 0.35) * _smooth_noise(rng, image_size, 2) + 0.05
            img = img * (1 - alpha) + _spectrum(rng, "cloud", 0.1)[:, None, None] * alpha
        k, flip = int(rng.integers(0, 4)), rng.random() < 0.5
        img, mask = np.rot90(img, k=k, axes=(1, 2)), np.rot90(mask, k=k)
        if flip:
            img, mask = img[:, :, ::-1], mask[:, ::-1]
        img = img * rng.uniform(0.6, 1.4) * (1 + 0.15 * rng.uniform(-1, 1, size=(4, 1, 1)))
        img = img + rng.normal(0, rng.uniform(0.01, 0.05), size=img.shape)
        x[i], masks[i] = np.clip(img, 0, 1), mask
    return x, masks


def generate_segmentation_demo(*, samples_per_class: int, image_size: int, seed: int, val_fraction: float) -> Dataset:
    """The demo set with the masks it painted: 7 x samples_per_class tiles, each its own scene."""
    from .dataset import Dataset

    n = samples_per_class * len(CLASSES)
    x, masks = generate_scenes(n, image_size, seed)
    order = np.random.default_rng(seed + 1).permutation(n)
    n_val = max(1, round(n * val_fraction))
    va, tr = np.sort(order[:n_val]), np.sort(order[n_val:])
    xt, yt = torch.from_numpy(x), torch.from_numpy(masks)
    return Dataset(name="edgekd-demo-landcover-masks", classes=list(CLASSES), bands=list(BANDS), x_train=xt[tr],
                   y_train=yt[tr], x_val=xt[va], y_val=yt[va], synthetic=True,
                   source=f"synthetic: {n} tiles of painted land-cover regions with their masks, from seed {seed}",
                   split="drawn at random (val_fraction); every tile is its own scene", task="segmentation",
                   ignore_index=255)


OBJECTS = ["vehicle", "storage_tank", "boat"]
# object spectra (R, G, B, NIR): painted vehicles, white tank roofs, dark hulls with a bright wake
OBJECT_SPECTRA = {"vehicle": [0.55, 0.12, 0.10, 0.30], "storage_tank": [0.80, 0.80, 0.82, 0.78],
                  "boat": [0.10, 0.10, 0.12, 0.06]}


def _place_object(rng: np.random.Generator, img: np.ndarray, kind: str) -> list[float] | None:
    """Paint one object on the tile (in place); its box [x1, y1, x2, y2] in pixels."""
    s = img.shape[-1]
    yy, xx = _coords(s)
    if kind == "vehicle":  # a small rectangle, either way round
        w, h = (rng.uniform(0.07, 0.11) * s, rng.uniform(0.04, 0.06) * s)[:: 1 if rng.random() < 0.5 else -1]
    elif kind == "storage_tank":  # a disk
        w = h = rng.uniform(0.09, 0.16) * s
    else:  # a boat: long and thin, either way round
        w, h = (rng.uniform(0.16, 0.24) * s, rng.uniform(0.05, 0.07) * s)[:: 1 if rng.random() < 0.5 else -1]
    cx, cy = rng.uniform(w / 2, s - w / 2), rng.uniform(h / 2, s - h / 2)
    if kind == "storage_tank":
        inside = np.hypot(xx - cx, yy - cy) <= w / 2
    else:
        inside = (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)
    if not inside.any():
        return None
    img[:, inside] = np.array(OBJECT_SPECTRA[kind], np.float32)[:, None] * rng.uniform(0.85, 1.15)
    ys, xs = np.nonzero(inside)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def generate_detection_demo(*, samples_per_class: int, image_size: int, seed: int, val_fraction: float) -> Dataset:
    """The demo set with objects on it: land-cover tiles with 0-4 vehicles, storage tanks and boats
    painted on each (about one tile in eight is a negative), and their boxes."""
    from .boxes import check_size, pad_labels

    check_size(image_size)
    n = samples_per_class * len(OBJECTS)
    x, _ = generate_scenes(n, image_size, seed)
    rng = np.random.default_rng(seed + 2)
    rows = []
    for i in range(n):
        boxes = []
        for _ in range(0 if rng.random() < 0.125 else int(rng.integers(1, 5))):
            c = int(rng.integers(len(OBJECTS)))
            box = _place_object(rng, x[i], OBJECTS[c])
            if box is not None:
                boxes.append([c, *box])
        rows.append(np.array(boxes, np.float32).reshape(-1, 5))
    x = np.clip(x + rng.normal(0, 0.01, size=x.shape).astype(np.float32), 0, 1)
    order = np.random.default_rng(seed + 1).permutation(n)
    n_val = max(1, round(n * val_fraction))
    va, tr = np.sort(order[:n_val]), np.sort(order[n_val:])
    xt, yt = torch.from_numpy(x), pad_labels(rows)
    return Dataset(name="edgekd-demo-objects", classes=list(OBJECTS), bands=list(BANDS), x_train=xt[tr],
                   y_train=yt[tr], x_val=xt[va], y_val=yt[va], synthetic=True,
                   source=f"synthetic: {n} land-cover tiles with painted vehicles, storage tanks and boats and their "
                          f"boxes, from seed {seed}",
                   split="drawn at random (val_fraction), by image", task="detection",
                   band_note="boxes painted by the generator")
