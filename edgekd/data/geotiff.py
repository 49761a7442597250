"""Multispectral GeoTIFF image folders (Sentinel-2, Landsat, drone multispectral): any band count
and dtype, read with rasterio, resized on read; bands chosen by name or index; 16-bit and float
data scaled per band from the training split's statistics (recorded, so a deployment scales the
same way).

Band names come from the file's band descriptions, else from a known layout (EuroSAT-MS's 13
Sentinel-2 bands), else b1..bN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

TIFF_SUFFIXES = {".tif", ".tiff"}
# EuroSAT-MS (Sentinel-2 L1C, 13 bands in band order)
SENTINEL2_13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B08A", "B09", "B10", "B11", "B12"]
SCALE_PERCENTILE = 99.0  # a band's scale: this percentile of its training pixels maps to 1.0


@dataclass(frozen=True)
class BandLayout:
    """The bands of a folder's files: names in file order, count and dtype."""

    names: list[str]
    dtype: str

    @property
    def count(self) -> int:
        return len(self.names)


def read_layout(path: Path) -> BandLayout:
    import rasterio

    try:
        with rasterio.open(path) as src:
            descriptions = list(src.descriptions)
            count, dtype = src.count, src.dtypes[0]
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{path} cannot be read as a GeoTIFF ({exc}); remove it or fix the file") from None
    if all(descriptions) and len(set(descriptions)) == count:
        names = [str(d) for d in descriptions]
    elif count == len(SENTINEL2_13):
        names = list(SENTINEL2_13)
    else:
        names = [f"b{i + 1}" for i in range(count)]
    return BandLayout(names, dtype)


def select_bands(layout: BandLayout, wanted: list[str] | None) -> list[int]:
    """0-based indices of the wanted bands, by name (B04) or 1-based index (4), in the order given."""
    if not wanted:
        return list(range(layout.count))
    out = []
    lower = [n.lower() for n in layout.names]
    for w in wanted:
        if w.isdigit():
            i = int(w) - 1
            if not 0 <= i < layout.count:
                raise DataError(f"--bands {w}: the files have {layout.count} bands (1..{layout.count}): "
                                f"{', '.join(layout.names)}")
        elif w.lower() in lower:
            i = lower.index(w.lower())
        else:
            raise DataError(f"--bands {w}: no band of that name; the files have {', '.join(layout.names)} "
                            "(or give 1-based indices)")
        if i in out:
            raise DataError(f"--bands names band {layout.names[i]} twice")
        out.append(i)
    return out


def read_tiff(path: Path, size: int, layout: BandLayout, bands: list[int],
              window: tuple[int, int, int] | None = None) -> np.ndarray:
    """The chosen bands of `path` at size x size (bilinear), as float32 raw values (C, H, W);
    `window` (top, left, side): that square of the raster only (a tile)."""
    import rasterio
    from rasterio.enums import Resampling

    try:
        with rasterio.open(path) as src:
            if src.count != layout.count or src.dtypes[0] != layout.dtype:
                raise DataError(f"{path} has {src.count} bands of {src.dtypes[0]}, the other files {layout.count} of "
                                f"{layout.dtype}; every image of a data set needs the same bands (remove or convert "
                                "it)")
            from rasterio.windows import Window

            win = None if window is None else Window(window[1], window[0], window[2], window[2])
            data = src.read([b + 1 for b in bands], out_shape=(len(bands), size, size),
                            resampling=Resampling.bilinear, window=win)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{path} cannot be read as a GeoTIFF ({exc}); remove it or fix the file") from None
    return data.astype(np.float32)


def band_scales(x_train: np.ndarray, dtype: str) -> list[float]:
    """Per band, the divisor that maps the data into [0, 1]: 255 for 8-bit data; for deeper or
    float data the band's 99th percentile over the training images (reflectance scaling)."""
    if dtype == "uint8":
        return [255.0] * x_train.shape[1]
    per_band = np.percentile(x_train.transpose(1, 0, 2, 3).reshape(x_train.shape[1], -1), SCALE_PERCENTILE, axis=1)
    return [float(max(v, 1e-6)) for v in per_band]
