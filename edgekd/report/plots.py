"""The report's plots (matplotlib, Agg), each returned as a PNG data URI so report.html is one
self-contained file that needs no network to view."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .model import Report  # noqa: E402

SELECTED, OTHER, TEACHER, BUDGET = "#1b7f3b", "#4a6fa5", "#8c5a2b", "#c0392b"


def _uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_uri(path: Path) -> str:
    """A PNG file as a data URI (empty when it is gone)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else ""


def mask_overlay(path: Path, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                 classes: list[str], ignore_index: int) -> None:
    """A PNG of validation tiles, one row each: the image (first three bands), the true mask, the
    teacher's and the student's predicted masks (one colour per class, ignore pixels black)."""
    k = len(classes)
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"].resampled(k)
    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows)), squeeze=False)
    for row, (img, *masks) in zip(axes, rows):
        row[0].imshow(_rgb(img))
        for ax, m in zip(row[1:], masks):
            shown = np.ma.masked_where(m == ignore_index, m)
            ax.set_facecolor("black")
            ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
    _finish(fig, axes, ("image", "truth", "teacher", "student"), cmap, classes, path, 6)


def box_drawing(path: Path, rows: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray],
                                          tuple[np.ndarray, np.ndarray]]], classes: list[str]) -> None:
    """A PNG of validation images, one row each: the true boxes, the teacher's and the student's
    detections (one colour per class) on the image (first three bands)."""
    k = len(classes)
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"].resampled(max(k, 2))
    fig, axes = plt.subplots(len(rows), 3, figsize=(7, 2.4 * len(rows)), squeeze=False)
    for row, (img, *sets) in zip(axes, rows):
        for ax, (boxes, labels) in zip(row, sets):
            ax.imshow(_rgb(img))
            for (x1, y1, x2, y2), c in zip(boxes, labels):
                ax.add_patch(matplotlib.patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.2,
                                                          edgecolor=cmap(int(c))))
    _finish(fig, axes, ("truth", "teacher", "student"), cmap, classes, path, 5)


def _rgb(img: np.ndarray) -> np.ndarray:
    """The first three bands of an image (C x H x W) as an RGB picture scaled to its brightest value."""
    rgb = np.clip(img[:3].transpose(1, 2, 0) if img.shape[0] >= 3 else np.repeat(img[:1], 3, 0).transpose(1, 2, 0),
                  0, 1)
    return rgb / max(float(rgb.max()), 1e-6)


def _finish(fig: Any, axes: Any, titles: tuple[str, ...], cmap: Any, classes: list[str], path: Path,
            ncol: int) -> None:
    """Column titles, no ticks, a legend of the class colours; saved as a PNG."""
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [matplotlib.patches.Patch(color=cmap(i), label=c) for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), ncol), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def pareto(r: Report) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    front = set(r.pareto_front)
    for c in r.candidates:
        p90 = c.measurement.latency_ms.p90
        sel = c.name == r.selected
        ax.scatter(p90, c.val_accuracy, s=70 if sel else 36, zorder=3,
                   color=SELECTED if sel else OTHER, marker="*" if sel else ("o" if c.name in front else "x"))
        ax.annotate(c.name, (p90, c.val_accuracy), fontsize=7, xytext=(4, 3), textcoords="offset points")
    t = r.teacher
    ax.scatter(t.measurement.latency_ms.p90, t.val_accuracy, color=TEACHER, marker="s", label="teacher")
    ax.axvline(r.budget_ms, color=BUDGET, linestyle="--", label=f"budget {r.budget_ms:g} ms")
    ax.set_xscale("log")  # students at 0.1 ms and a budget or teacher far away stay apart
    ax.set_xlabel(f"p90 latency, ms, log scale ({r.teacher.measurement.source['latency']})")
    ax.set_ylabel(f"validation {r.metric}")
    ax.set_title(f"{r.metric} vs p90 latency (star: selected, o: Pareto front)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _uri(fig)


def latency(r: Report) -> str:
    rows = [("teacher", r.teacher.measurement)] + [(c.name, c.measurement) for c in r.candidates]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.2))
    for i, (name, m) in enumerate(rows):
        lat = m.latency_ms
        ax.plot([lat.min, lat.p99], [i, i], color="#999", lw=2)
        ax.plot([lat.p50], [i], "o", color=SELECTED if name == r.selected else OTHER)
        ax.plot([lat.p90], [i], "|", color=BUDGET, markersize=12)
    ax.axvline(r.budget_ms, color=BUDGET, linestyle="--", lw=1)
    ax.set_xscale("log")  # the teacher and the students differ by an order of magnitude
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=8)
    ax.set_xlabel(f"latency, ms — line min..p99, dot p50, tick p90 ({rows[0][1].runtime})")
    ax.set_title("latency distributions")
    ax.grid(axis="x", alpha=0.3)
    return _uri(fig)


def hardware_cost(r: Report) -> str:
    cands = r.candidates
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    bottom = [0.0] * len(cands)
    for key, color in (("latency", "#4a6fa5"), ("memory", "#8fb3de"), ("energy", "#e3a857")):
        vals = [c.hardware_cost.terms.get(key) or 0.0 for c in cands]
        ax.bar(range(len(cands)), vals, bottom=bottom, color=color, label=key)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(cands)), [c.name for c in cands], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("weighted term of C_hw (teacher = reference)")
    ax.set_title("hardware cost C_hw per candidate")
    ax.legend(fontsize=8)
    return _uri(fig)


def energy(r: Report) -> str:
    cands = r.candidates
    vals = [c.measurement.energy_mj or 0.0 for c in cands]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.bar(range(len(cands)), vals, color=[SELECTED if c.name == r.selected else OTHER for c in cands])
    ax.set_xticks(range(len(cands)), [c.name for c in cands], rotation=35, ha="right", fontsize=7)
    src = {c.measurement.source.get("energy", "not measured") for c in cands}
    ax.set_ylabel(f"mJ per inference ({', '.join(sorted(src))})")
    ax.set_title("energy per inference")
    return _uri(fig)


def training(r: Report) -> str:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.2, 3.2))
    loss = r.teacher.train_loss
    if loss:
        a1.plot(range(1, len(loss) + 1), loss, marker="o", color=TEACHER)
    a1.set_title("teacher training loss")
    a1.set_xlabel("epoch")
    for t in r.trials:
        if t.rungs:
            a2.plot([g.epochs for g in t.rungs], [g.val_accuracy for g in t.rungs], marker="o",
                    color=SELECTED if t.name == r.selected else OTHER, alpha=0.8, lw=1)
    a2.set_title(f"students: validation {r.metric} per rung")
    a2.set_xlabel("epochs")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    return _uri(fig)


def confusion(r: Report) -> str:
    """The selected student's confusion matrix on the validation split (test split when given)."""
    every: list[Any] = [*r.per_class, *r.per_class_iou]
    chosen: Any = next((m for m in every if m.model == r.selected), None)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    if chosen is None:
        ax.text(0.5, 0.5, "no per-class figures in this report", ha="center")
        ax.set_axis_off()
        return _uri(fig)
    figs = chosen.test or chosen.validation
    names = [c.name for c in figs.classes]
    ax.imshow(figs.confusion, cmap="Greens")
    for i, row in enumerate(figs.confusion):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v) if v < 10_000 else f"{v / 1000:.0f}k", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{r.selected}: {figs.split} split, {figs.n} images" + (" (pixels)" if r.per_class_iou else ""))
    return _uri(fig)


ALL: dict[str, Callable[[Report], str]] = {"pareto": pareto, "latency": latency, "hardware_cost": hardware_cost,
                                           "energy": energy, "training": training, "confusion": confusion}
