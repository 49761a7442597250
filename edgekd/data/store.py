"""Decoded images on disk: an image folder is decoded once into a compact memory-mapped array
(uint8 for 8-bit images, uint16 for deeper ones) under the user cache directory, keyed by the
folder's file list, sizes and modification times and the resize settings; a later run reads it
back instead of decoding again, and a changed folder gets a new cache. `ImageArray` serves
float32 batches in [0, 1] from it, so a data set far larger than memory is never held as float32.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

CACHE_VERSION = 1  # bump when the decoding changes: old caches are then not reused


def cache_root() -> Path:
    from ..profilers.cache import default_cache_dir

    return default_cache_dir() / "images"


def folder_key(files: Sequence[Path], settings: dict[str, Any]) -> str:
    """The identity of a decoded folder: every file's path, size and modification time, and the
    settings that shape the decoded arrays (size, resampling, bands)."""
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _read_rows(data: np.ndarray, rows: np.ndarray, idx: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """(the rows `idx` of a view read from the file in file order, where each goes back in the
    asked order, whether `idx` named one row)."""
    if isinstance(idx, torch.Tensor):
        idx = idx.numpy()
    picked = rows[idx]
    scalar = bool(np.ndim(picked) == 0)
    picked = np.atleast_1d(picked)
    order = np.argsort(picked, kind="stable")  # read the file forwards, return in the asked order
    return np.asarray(data[picked[order]]), order, scalar


class ImageArray:
    """Rows of a memory-mapped (N, C, H, W) integer array as float32 tensors in [0, 1]:
    `x[idx]` reads just those rows and divides each band by its scale. A view (rows, bands)
    shares the file; nothing is copied until indexed."""

    def __init__(self, data: np.ndarray, scale: Sequence[float] | np.ndarray, rows: np.ndarray | None = None,
                 bands: Sequence[int] | None = None):
        self.data = data
        self.rows = np.arange(len(data)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.bands = list(range(data.shape[1])) if bands is None else list(bands)
        self.scale = np.asarray(scale, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by reference to its cache file (a worker process or a Ray task reopens the
        memory map; the images are never copied into the pickle)."""
        filename = getattr(self.data, "filename", None)
        if filename is None:
            return (ImageArray, (np.asarray(self.data), self.scale, self.rows, self.bands))
        return (_reopen, (str(filename), self.scale, self.rows, self.bands))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), len(self.bands), int(self.data.shape[2]), int(self.data.shape[3]))

    def __getitem__(self, idx: Any) -> torch.Tensor:
        block, order, scalar = _read_rows(self.data, self.rows, idx)
        block = block[:, self.bands]
        out = np.empty(block.shape, dtype=np.float32)
        out[order] = block.astype(np.float32) / self.scale[self.bands][None, :, None, None]
        t = torch.from_numpy(np.clip(out, 0.0, 1.0, out=out))
        return t[0] if scalar else t

    def view(self, rows: np.ndarray | None = None, bands: Sequence[int] | None = None) -> ImageArray:
        """These rows (indices into this view) and/or bands (indices into this view's bands)."""
        return ImageArray(self.data, self.scale, self.rows if rows is None else self.rows[rows],
                          self.bands if bands is None else [self.bands[b] for b in bands])

    def numpy(self) -> np.ndarray:
        return self[:].numpy()

    def channel_stats(self, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band mean and std over every image, read in chunks of bounded size."""
        return chunked_stats(self, chunk)


class MaskArray:
    """Rows of a memory-mapped (N, H, W) uint8 array of class masks as uint8 tensors: `y[idx]`
    reads just those rows. Like `ImageArray`, a view shares the file and pickles by reference."""

    def __init__(self, data: np.ndarray, rows: np.ndarray | None = None):
        self.data = data
        self.rows = np.arange(len(data)) if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __reduce__(self) -> tuple[Any, ...]:
        filename = getattr(self.data, "filename", None)
        if filename is None:
            return (MaskArray, (np.asarray(self.data), self.rows))
        return (_reopen_masks, (str(filename), self.rows))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rows), int(self.data.shape[-2]), int(self.data.shape[-1]))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def __getitem__(self, idx: Any) -> torch.Tensor:
        block, order, scalar = _read_rows(self.data, self.rows, idx)
        out = np.empty((len(block), *self.shape[1:]), dtype=np.uint8)
        out[order] = block.reshape(len(block), *self.shape[1:])
        t = torch.from_numpy(out)
        return t[0] if scalar else t

    def view(self, rows: np.ndarray) -> MaskArray:
        return MaskArray(self.data, self.rows[rows])

    def numpy(self) -> np.ndarray:
        return self[:].numpy()


Labels = torch.Tensor | MaskArray  # what a data set's labels are (class indices, or masks)


def _reopen_masks(filename: str, rows: np.ndarray) -> MaskArray:
    return MaskArray(np.load(filename, mmap_mode="r"), rows)


def _reopen(filename: str, scale: np.ndarray, rows: np.ndarray, bands: list[int]) -> ImageArray:
    return ImageArray(np.load(filename, mmap_mode="r"), scale, rows, bands)


class StackedImages:
    """Images of several sources (image-cache arrays or tensors) as one indexable sequence,
    nothing copied: an incremental update's new images followed by the replayed old ones, each
    read from its own cache when a batch asks for it. Same interface as ImageArray."""

    def __init__(self, parts: Sequence[torch.Tensor | ImageArray], index: np.ndarray | None = None):
        self.parts = list(parts)
        if index is None:
            index = np.concatenate([np.stack([np.full(len(p), k), np.arange(len(p))], 1)
                                    for k, p in enumerate(self.parts)]).astype(np.int64)
        self.index = index.reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        first = self.parts[0].shape
        return (len(self), int(first[1]), int(first[2]), int(first[3]))

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        picked = self.index[idx]
        scalar = picked.ndim == 1
        picked = picked.reshape(-1, 2)
        out = torch.empty((len(picked), *self.shape[1:]), dtype=torch.float32)
        for k in np.unique(picked[:, 0]):
            where = np.flatnonzero(picked[:, 0] == k)
            out[torch.from_numpy(where)] = self.parts[k][torch.from_numpy(picked[where, 1])]
        return out[0] if scalar else out

    def view(self, rows: np.ndarray | None = None, bands: Sequence[int] | None = None) -> StackedImages:
        parts = self.parts if bands is None else [p.view(bands=bands) if isinstance(p, ImageArray)
                                                  else p[:, list(bands)].contiguous() for p in self.parts]
        return StackedImages(parts, self.index if rows is None else self.index[rows])

    def numpy(self) -> np.ndarray:
        return self[:].numpy()

    def channel_stats(self, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return chunked_stats(self, chunk)


def chunked_stats(x: ImageArray | StackedImages, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and std over every image of `x`, read in chunks of bounded size."""
    chunk = chunk or rows_per_chunk(x, chunk_bytes=CHUNK_BYTES // 2)  # float64 copies below
    bands = x.shape[1]
    n, total, sq = 0, torch.zeros(bands, dtype=torch.float64), torch.zeros(bands, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk].to(torch.float64)
        total += xb.sum(dim=(0, 2, 3))
        sq += xb.square_().sum(dim=(0, 2, 3))
        n += xb.shape[0] * xb.shape[2] * xb.shape[3]
    mean = total / max(n, 1)
    var = (sq / max(n, 1) - mean * mean).clamp_min(0) * n / max(n - 1, 1)
    return mean.float(), var.sqrt().float()


LAZY = (ImageArray, StackedImages)  # image sources read on demand (isinstance checks)


def stack(parts: Sequence[Images]) -> Images:
    """`parts` one after another: tensors are concatenated; anything served from the image cache
    stays there (a StackedImages over it), so merging data sets never materialises them."""
    parts = [p for p in parts if len(p)] or list(parts[:1])
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(list(parts))  # type: ignore[arg-type]
    if len(parts) == 1:
        return parts[0]
    flat: list[torch.Tensor | ImageArray] = []
    index = []
    for p in parts:
        if isinstance(p, StackedImages):
            index.append(p.index + [len(flat), 0])
            flat += p.parts
        else:
            index.append(np.stack([np.full(len(p), len(flat)), np.arange(len(p))], 1))
            flat.append(p)
    return StackedImages(flat, np.concatenate(index).astype(np.int64))


def take(x: Images, rows: np.ndarray) -> Images:
    """These rows of `x`: a view for images served from the cache, a copy for a tensor."""
    return x.view(rows=rows) if isinstance(x, LAZY) else x[torch.from_numpy(np.asarray(rows, dtype=np.int64))]


Images = torch.Tensor | ImageArray | StackedImages  # what a Dataset's image fields hold

CHUNK_BYTES = 64 << 20  # float32 images read at once for statistics, hashing and inference


def rows_per_chunk(x: Images, limit: int = 1 << 16, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many images of `x` make one bounded read (at most `limit`, at least 1): 512 images of
    64x64x13 or 85 of 256x256x3 at the default 64 MB of float32, so statistics, hashing and
    inference stay bounded at any image size."""
    per_image = 4 * int(np.prod(x.shape[1:])) if len(x.shape) > 1 else 4
    return max(1, min(limit, chunk_bytes // max(per_image, 1)))


def inference_batch(x: Images, limit: int = 256) -> int:
    """Images of `x` per forward pass without gradients: 4 MB of input per batch (85 images of
    64x64x3, 5 of 256x256x3, at most `limit`). A teacher's activations are tens of times its
    input: measured on a 27,000-tile run, batches of 256 at 64 px put ~500 MB on top of training."""
    return rows_per_chunk(x, limit, chunk_bytes=4 << 20)


def as_tensor(x: Images) -> torch.Tensor:
    """Every image as one float32 tensor (for the few places that need them all at once)."""
    return x[:] if isinstance(x, LAZY) else x


PROGRESS_FROM = 500  # a first decode of at least this many images shows a progress bar on a terminal


def _progress(files: list[Path]):
    """`files`, with a transient progress bar on stderr when it is a terminal and the folder is large
    (a log file gets nothing: the run's own lines say what happens)."""
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    if len(files) < PROGRESS_FROM or not console.is_terminal:
        return files
    return track(files, description=f"decoding {len(files):,} images into the image cache (once)", console=console,
                 transient=True)


def decode_folder(files: list[Path], read: Callable[[Path], np.ndarray | None], image_shape: tuple[int, int, int],
                  dtype: str, settings: dict[str, Any], on_file: Callable[[], None] | None = None,
                  read_at: Callable[[int, Path], np.ndarray | None] | None = None) -> tuple[np.ndarray, list[bool]]:
    """The decoded images of `files` as a read-only memory map (N, C, H, W) of `dtype`, from the
    cache when the same files and settings were decoded before, and which files were readable
    (`read` returns None for a file that is not an image; its row stays zero and is not used).
    `read_at(row, file)`, when given, reads row `row` instead (a file may give several rows:
    tiles of a large scene; `settings` must then say how it was cut). A read that raises leaves
    no partial file behind."""
    key = folder_key(files, {**settings, "dtype": dtype, "shape": list(image_shape)})
    folder = cache_root() / key
    data_file, meta_file = folder / "images.npy", folder / "meta.json"
    if data_file.exists() and meta_file.exists():
        ok = json.loads(meta_file.read_text())["readable"]
        return np.load(data_file, mmap_mode="r"), ok
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".images.{os.getpid()}.npy"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(files), *image_shape))
    ok = []
    try:
        for i, f in enumerate(_progress(files)):
            img = read_at(i, f) if read_at is not None else read(f)
            ok.append(img is not None)
            if img is not None:
                mm[i] = img
            if on_file is not None:
                on_file()
        mm.flush()
    except BaseException:
        del mm
        tmp.unlink(missing_ok=True)
        raise
    del mm
    tmp.replace(data_file)  # complete or absent: a killed decode is redone, never half-read
    meta_file.write_text(json.dumps({"readable": ok, "files": len(files), "settings": settings}))
    return np.load(data_file, mmap_mode="r"), ok
