"""Teacher outputs for KD: computed once per data set and view, stored on disk as memory-mapped
arrays, shared by every candidate and round — or, for comparison, computed live every batch.

Augmentation: a random view of each batch, one of the 8 dihedral transforms (rotations by 90
degrees, with or without a flip), which preserve every label of top-down imagery. The cache
holds the teacher's outputs for the first `views` transforms (1 = no augmentation), so a cached
target always belongs to exactly the image the student sees."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..data.store import Images, inference_batch, rows_per_chunk
from ..models.taps import tapped_features

MAX_VIEWS = 8


def apply_view(x: torch.Tensor, view: int) -> torch.Tensor:
    """Dihedral transform `view` (0 = identity): rot90 k = view % 4, then a horizontal flip if view >= 4."""
    y = torch.rot90(x, k=view % 4, dims=(-2, -1))
    return y.flip(-1) if view >= 4 else y


@dataclass
class TeacherBatch:
    logits: list[torch.Tensor]  # one per teacher
    feats: list[torch.Tensor] = field(default_factory=list)
    emb: torch.Tensor | None = None
    edges: torch.Tensor | None = None  # a GFL-style detector head's side distributions (logits), for LD


class TeacherSource(Protocol):
    views: int

    def batch(self, idx: torch.Tensor, view: int, xb: torch.Tensor) -> TeacherBatch: ...


def _forward(teacher: nn.Module, xb: torch.Tensor, want_feats: bool, modules: list[str] | None = None
             ) -> tuple[torch.Tensor, list, torch.Tensor | None]:
    """(logits, stage features, embedding): the named modules' outputs when `modules` is given,
    else the model's own stages."""
    if want_feats and modules:
        return tapped_features(teacher, xb, modules)
    forward_features = getattr(teacher, "forward_features", None)
    if want_feats and forward_features is not None:
        logits, feats, emb = forward_features(xb)
        return logits, feats, emb
    return teacher(xb), [], None


def _forward_edges(teacher: nn.Module, xb: torch.Tensor, want_feats: bool, edges: bool,
                   modules: list[str] | None = None) -> tuple[torch.Tensor, list, torch.Tensor | None,
                                                             torch.Tensor | None]:
    """`_forward` and, with `edges`, the GFL-style head's side logits of the same pass."""
    if not edges:
        return (*_forward(teacher, xb, want_feats, modules), None)
    from ..models.detnet import capturing_edges

    with capturing_edges(teacher) as cap:
        logits, feats, emb = _forward(teacher, xb, want_feats, modules)
        return logits, feats, emb, cap.edges()


class LiveTeacher:
    """Runs the teacher(s) on every batch: the slow path the cache is measured against."""

    def __init__(self, teachers: list[nn.Module], views: int = 1, features: bool = False,
                 modules: list[str] | None = None, edges: bool = False):
        self.teachers, self.views, self.features, self.modules = teachers, views, features, modules
        self.edges = edges
        for t in teachers:
            t.eval()

    @torch.no_grad()
    def batch(self, idx: torch.Tensor, view: int, xb: torch.Tensor) -> TeacherBatch:
        logits, feats, emb, edges = _forward_edges(self.teachers[0], xb, self.features, self.edges, self.modules)
        return TeacherBatch([logits] + [t(xb) for t in self.teachers[1:]], feats, emb, edges)


class TeacherOutputs:
    """Memory-mapped teacher outputs: logits[t] of shape (views, N, classes), optional stage
    features[l] of shape (views, N, C, H, W), embedding (views, N, D) and a GFL-style detector
    head's side logits (views, N, A, 4, R + 1; float16) of the main teacher."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        self.views = int(self.meta["views"])
        self.logits = [np.load(folder / f"logits{t}.npy", mmap_mode="r") for t in range(self.meta["teachers"])]
        self.feats = [np.load(folder / f"features{i}.npy", mmap_mode="r") for i in range(self.meta["feature_maps"])]
        self.emb = np.load(folder / "embedding.npy", mmap_mode="r") if self.meta["embedding"] else None
        self.edges = np.load(folder / "edges.npy", mmap_mode="r") if self.meta.get("edges") else None

    def __reduce__(self) -> tuple[type[TeacherOutputs], tuple[Path]]:
        # by reference, absolute: a task (another working directory) reopens the memory maps
        return (TeacherOutputs, (self.folder.resolve(),))

    def batch(self, idx: torch.Tensor, view: int, xb: torch.Tensor) -> TeacherBatch:
        i = idx.numpy()
        return TeacherBatch([torch.from_numpy(np.asarray(a[view][i])) for a in self.logits],
                            [torch.from_numpy(np.asarray(f[view][i])) for f in self.feats],
                            None if self.emb is None else torch.from_numpy(np.asarray(self.emb[view][i])),
                            None if self.edges is None else torch.from_numpy(np.asarray(self.edges[view][i])))

    def logits_view0(self) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.logits[0][0]))

    @staticmethod
    def key(teachers: list[nn.Module], x: Images, views: int, features: bool, embedding: bool,
            modules: list[str] | None = None, edges: bool = False) -> str:
        h = hashlib.sha256()
        for t in teachers:
            for k, v in t.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().cpu().numpy().tobytes())
        chunk = rows_per_chunk(x)  # images served from the cache are never all in memory
        for i in range(0, len(x), chunk):
            h.update(x[i:i + chunk].numpy().tobytes())
        h.update(f"{views}|{features}|{embedding}|{','.join(modules or [])}{'|edges' if edges else ''}".encode())
        return h.hexdigest()[:16]

    @classmethod
    @torch.no_grad()
    def build(cls, root: Path, teachers: list[nn.Module], x: Images, *, views: int = 1,
              features: bool = False, embedding: bool = False, modules: list[str] | None = None,
              batch_size: int | None = None, edges: bool = False) -> TeacherOutputs:
        """Compute (or reuse, when the same teachers, images and settings were cached before).
        `modules`: the main teacher's feature maps are these named modules' outputs. `edges`: the
        main teacher's GFL-style side distributions too (localisation distillation)."""
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be 1..{MAX_VIEWS}")
        folder = root / cls.key(teachers, x, views, features, embedding, modules, edges)
        if (folder / "meta.json").exists():
            return cls(folder)
        tmp = folder.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for t in teachers:
            t.eval()
        n = len(x)
        batch_size = batch_size or inference_batch(x)
        logits_arrays: list[np.ndarray] = []
        feat_arrays: list[np.ndarray] = []
        emb_array: np.ndarray | None = None
        edge_array: np.ndarray | None = None
        for v in range(views):
            for start in range(0, n, batch_size):
                xb = apply_view(x[start:start + batch_size], v)
                main, feats, emb, sides = _forward_edges(teachers[0], xb, features or embedding, edges, modules)
                outs = [main] + [t(xb) for t in teachers[1:]]
                if not logits_arrays:  # dense logits (N, K, h, w) at the teacher's output stride, in float16
                    logits_arrays = [np.lib.format.open_memmap(tmp / f"logits{i}.npy", "w+", _dtype(o),
                                                               (views, n, *o.shape[1:])) for i, o in enumerate(outs)]
                    if features:
                        feat_arrays = [np.lib.format.open_memmap(tmp / f"features{j}.npy", "w+", np.float32,
                                                                 (views, n, *f.shape[1:])) for j, f in enumerate(feats)]
                    if embedding and emb is not None:
                        emb_array = np.lib.format.open_memmap(tmp / "embedding.npy", "w+", np.float32,
                                                              (views, n, emb.shape[1]))
                    if sides is not None:
                        edge_array = np.lib.format.open_memmap(tmp / "edges.npy", "w+", np.float16,
                                                               (views, n, *sides.shape[1:]))
                for arr, o in zip(logits_arrays, outs):
                    arr[v, start:start + len(xb)] = o.numpy()
                for arr, f in zip(feat_arrays, feats):
                    arr[v, start:start + len(xb)] = f.numpy()
                if emb_array is not None and emb is not None:
                    emb_array[v, start:start + len(xb)] = emb.numpy()
                if edge_array is not None and sides is not None:
                    edge_array[v, start:start + len(xb)] = sides.numpy()
        extra = [a for a in (emb_array, edge_array) if a is not None]
        for arr in [*logits_arrays, *feat_arrays, *extra]:
            arr.flush()  # type: ignore[attr-defined]  # np.memmap, typed by open_memmap as ndarray
        (tmp / "meta.json").write_text(json.dumps({"views": views, "teachers": len(teachers), "n": n,
                                                   "feature_maps": len(feat_arrays), "embedding": embedding,
                                                   "edges": edge_array is not None}))
        tmp.replace(folder)  # complete or absent: a killed build is recomputed, never half-read
        return cls(folder)


def _dtype(out: torch.Tensor) -> type:
    """float16 for dense maps and detector rows (half the disk; logits need no more), float32 for
    class scores."""
    return np.float16 if out.dim() >= 3 else np.float32


def cache_bytes(teacher: nn.Module, x: Images, views: int, edges: bool = False) -> int:
    """Disk bytes of the teacher's logits (and, with `edges`, its GFL-style side distributions)
    for `views` views of every image of `x` (one probe forward)."""
    teacher.eval()
    with torch.no_grad():
        out, _, _, sides = _forward_edges(teacher, x[0:1], False, edges)
    per = int(np.prod(out.shape[1:])) * np.dtype(_dtype(out)).itemsize
    per += 0 if sides is None else int(np.prod(sides.shape[1:])) * 2  # float16
    return views * len(x) * per


class InMemoryTeacher:
    """Teacher logits already in memory (one view): for tests and benchmarks."""

    def __init__(self, logits: torch.Tensor):
        self.logits, self.views = logits, 1

    def batch(self, idx: torch.Tensor, view: int, xb: torch.Tensor) -> TeacherBatch:
        return TeacherBatch([self.logits[idx]])
