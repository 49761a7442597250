"""report.html: one self-contained page (plots embedded as data URIs, no scripts, no network),
readable on a phone and on a laptop."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import facts, plots
from .markdown import conditions
from .model import Report

_RUN_DIR: Path | None = None  # the run directory of the page being rendered (files it embeds)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
main{max-width:1100px;margin:0 auto;padding:12px}
h1{font-size:1.4rem;margin:.6rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
.banner{padding:.6rem .8rem;border-radius:6px;margin:.5rem 0;font-weight:600}
.warn{background:#fdecea;border:1px solid #e6a39a}.info{background:#eef4fb;border:1px solid #a9c3e3}
.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:.6rem .8rem;flex:1 1 150px;min-width:140px}
.card b{display:block;font-size:1.15rem}.card span{font-size:.8rem;color:#5b6672}
.ok{color:#1b7f3b}.bad{color:#c0392b}
figure{background:#fff;border:1px solid #dde2e8;border-radius:8px;margin:8px 0;padding:6px}
figure img{width:100%;height:auto}figcaption{font-size:.8rem;color:#5b6672}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px}
.scroll{overflow-x:auto}table{border-collapse:collapse;background:#fff;font-size:.82rem;width:100%}
th,td{border:1px solid #dde2e8;padding:3px 6px;text-align:right;white-space:nowrap}th{background:#eef1f5}
td:first-child,th:first-child{text-align:left}tr.sel{background:#e8f5ec;font-weight:600}
pre{background:#fff;border:1px solid #dde2e8;padding:8px;overflow-x:auto;font-size:.75rem}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _f(v: Any, d: int = 3) -> str:
    return "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else _e(v))


def _table(header: list[str], rows: list[list[str]], selected_rows: frozenset[int] | set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(f"<tr{' class=sel' if i in selected_rows else ''}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                   for i, row in enumerate(rows))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


@dataclass(frozen=True)
class SummaryCard:
    """The facts of the summary card, computed once so the page and the tests agree."""

    target: str
    budget_ms: float
    selected: str
    student_accuracy: float
    teacher_accuracy: float
    speedup: float | None  # teacher p50 / student p50
    budget_met: bool
    energy_mj: float | None
    energy_source: str | None
    latency_source: str
    p90_ms: float
    dataset: str
    synthetic: bool
    metric: str = "accuracy"


def summary(r: Report) -> SummaryCard:
    best, t = r.best, r.teacher
    tp50, bp50 = t.measurement.latency_ms.p50, best.measurement.latency_ms.p50
    m = best.measurement
    return SummaryCard(target=r.target.name, budget_ms=r.budget_ms, selected=r.selected,
                       student_accuracy=best.val_accuracy, teacher_accuracy=t.val_accuracy,
                       speedup=tp50 / bp50 if bp50 > 0 else None, budget_met=best.meets_budget,
                       energy_mj=m.energy_mj, energy_source=m.source.get("energy"), latency_source=m.source["latency"],
                       p90_ms=m.latency_ms.p90, dataset=r.dataset.name, synthetic=r.dataset.synthetic,
                       metric=r.metric)


CAPTIONS = {"pareto": "Pareto view: accuracy against p90 latency, the budget line and the selected student.",
            "latency": "Latency distribution of every model (min to p99, p50 dot, p90 tick).",
            "hardware_cost": "C_hw breakdown: the weighted latency, memory and energy terms.",
            "energy": "Energy per inference (its source is on the axis).",
            "training": "Training curves: the teacher's loss; each student's accuracy at each rung.",
            "confusion": "Confusion matrix of the selected student (rows: true class; the test split when the "
                         "data has one)."}


def _banners(r: Report) -> str:
    return "".join(f'<div class="banner {kind}">{_e(text)}</div>' for kind, text in facts.banners(r))


def _cards(r: Report, s: SummaryCard) -> str:
    cards = [
        ("target", _e(s.target), f"budget p90 ≤ {s.budget_ms:g} ms"),
        ("selected student", _e(s.selected), _e(r.selection_reason[:140])),
        (s.metric, f"{s.student_accuracy:.3f}", f"teacher {s.teacher_accuracy:.3f}"),
        ("speed-up vs teacher", "–" if s.speedup is None else f"{s.speedup:.1f}x", f"p50, {_e(s.latency_source)}"),
        ("budget", '<span class="ok">met</span>' if s.budget_met else '<span class="bad">not met</span>',
         f"p90 {s.p90_ms:.3f} ms"),
        ("energy / inference", "–" if s.energy_mj is None else f"{s.energy_mj:.3f} mJ", _e(s.energy_source)),
        ("data set", _e(s.dataset), "synthetic" if s.synthetic else "real"),
    ]
    return "".join(f'<div class="card"><span>{_e(k)}</span><b>{v}</b><span>{sub}</span></div>' for k, v, sub in cards)


def _candidates(r: Report) -> str:
    cands = sorted(r.candidates, key=lambda c: c.objective)
    rows = [[_e(c.name), _e(c.precision), f"{c.params:,}", _f(c.val_accuracy), _f(c.val_kd_loss),
             _f(c.measurement.latency_ms.p50),
             _f(c.measurement.latency_ms.p90) + (" (contended)" if c.measurement.contended else ""),
             _f(c.measurement.peak_memory_mb, 1),
             _f(c.measurement.energy_mj, 4), _f(c.c_hw), _f(c.penalty, 1), _f(c.objective),
             _e(", ".join(f"{k}: {v}" for k, v in c.measurement.source.items()))] for c in cands]
    selected = {i for i, c in enumerate(cands) if c.name == r.selected}
    return _table(["candidate", "precision", "params", facts.val_label(r), "KD loss", "p50 ms", "p90 ms", "peak MB",
                   "mJ", "C_hw", "P_rt", "J", "sources"], rows, selected)


def _precisions(r: Report) -> str:
    if not r.precisions:
        return ""
    rows = [[_e(p.student), _e(t.precision), _f(t.p50_ms, 4), _f(t.p90_ms, 4),
             "–" if t.latency_ratio is None else _f(t.latency_ratio), _f(t.val_accuracy),
             _e(t.source + (" (contended)" if t.contended else "")), "kept" if t.kept else "dropped"]
            for p in r.precisions for t in p.tried]
    reasons = "".join(f"<li>{_e(p.student)} r{p.rung}: {_e(p.reason)}</li>" for p in r.precisions)
    return ('<section id="precisions"><h2>Precisions</h2><p>A lower precision is kept only when measured faster '
            "on the target than the FP32 version of the same student.</p>"
            + _table(["student", "precision", "p50 ms", "p90 ms", "p10 / teacher", facts.val_label(r), "source",
                      "verdict"], rows) + f"<ul>{reasons}</ul></section>")


def _per_class(r: Report) -> str:
    parts = []
    for m in r.per_class:
        for figs in filter(None, (m.validation, m.test)):
            rows = [[_e(c.name), _f(c.precision), _f(c.recall), _f(c.f1), str(c.support)] for c in figs.classes]
            parts.append(f"<h3>{_e(m.model)}, {_e(figs.split)} split: accuracy {figs.accuracy:.3f}, balanced "
                         f"accuracy {figs.balanced_accuracy:.3f}, macro F1 {figs.macro_f1:.3f}</h3>"
                         + _table(["class", "precision", "recall", "F1", "support"], rows))
    for d in r.per_class_iou:
        for seg in filter(None, (d.validation, d.test)):
            rows = [[_e(c.name), _f(c.iou), f"{c.pixels:,}"] for c in seg.classes]
            parts.append(f"<h3>{_e(d.model)}, {_e(seg.split)} split ({seg.n} tiles): mIoU {seg.miou:.3f}, pixel "
                         f"accuracy {seg.pixel_accuracy:.3f}</h3>" + _table(["class", "IoU", "pixels"], rows))
    for d in r.scenes:
        seg = d.validation
        rows = [[_e(c.name), _f(c.iou), f"{c.pixels:,}"] for c in seg.classes]
        parts.append(f"<h3>{_e(d.model)}, {_e(seg.split)}, {seg.n} scenes: mIoU {seg.miou:.3f}, pixel accuracy "
                     f"{seg.pixel_accuracy:.3f}</h3>" + _table(["class", "IoU", "pixels"], rows))
    if r.scene_cost is not None:
        parts.append(f"<p>{_e(facts.scene_cost(r))}</p>")
    if r.mask_overlays and _RUN_DIR is not None:
        parts.append("<h3>Validation tiles: image, truth, teacher, selected student</h3>"
                     + "".join(f'<img alt="mask overlay" src="{plots.file_uri(_RUN_DIR / p)}">'
                               for p in r.mask_overlays))
    for title, rows in facts.detection_tables(r):
        parts.append(f"<h3>{_e(title)}</h3>" + _table(facts.DETECTION_HEADERS, [[_e(c) for c in row] for row in rows]))
    parts += [f"<p>{_e(line)}</p>" for line in facts.detection_lines(r)]
    if r.detection and r.detection.drawings and _RUN_DIR is not None:
        parts.append("<h3>Validation images: truth, teacher, selected student</h3>"
                     + "".join(f'<img alt="detections" src="{plots.file_uri(_RUN_DIR / p)}">'
                               for p in r.detection.drawings))
    title = "Per class IoU" if r.per_class_iou else "Per class AP" if r.detection else "Per class"
    return f'<section id="per-class"><h2>{title}</h2>{"".join(parts)}</section>' if parts else ""


def _host(r: Report) -> str:
    rows = facts.host_rows(r)
    if not rows:
        return "<p>No host conditions recorded (predicted figures, or a report from before edgekd kept them).</p>"
    return _table(facts.HOST_HEADERS, [[_e(v) for v in row] for row in rows])


def _boards(r: Report) -> str:
    if not r.measurement.boards:
        return ""
    return "<h3>Boards</h3>" + _table(facts.BOARD_HEADERS, [[_e(v) for v in row] for row in facts.board_rows(r)])


def _exports(r: Report) -> str:
    notes = "".join(f"<li>{_e(e.format)}: {_e(n)}</li>" for e in r.exports for n in e.notes)
    return _table(["format", "precision", "size MB", facts.agreement_label(r), f"{facts.metric(r)} Δ", "max |Δlogit|",
                   "checked with", "file"],
                  [[_e(e.format), _e(e.precision), _f(e.size_mb), _f(e.parity.top1_agreement, 4),
                    _f(e.parity.accuracy_delta, 4), f"{e.parity.max_abs_diff:.2e}", _e(facts.checked_with(e)),
                    _e(e.path)] for e in r.exports]) + (f"<ul>{notes}</ul>" if notes else "")


def render_html(r: Report, run_dir: Path | None = None) -> str:
    """The page; `run_dir` lets it embed the files the report names (mask overlays)."""
    global _RUN_DIR
    _RUN_DIR = run_dir
    s = summary(r)
    captions = {k: v.replace("accuracy", r.metric) for k, v in CAPTIONS.items()}  # mIoU for segmentation
    figs = "".join(f'<figure id="plot-{k}"><img alt="{_e(k)} plot" src="{fn(r)}"><figcaption>{_e(captions[k])}'
                   "</figcaption></figure>" for k, fn in plots.ALL.items())
    versions = _table(["package", "version"], [[_e(k), _e(v)] for k, v in r.software.items()])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgekd report: {_e(s.target)}, {_e(s.selected)}</title><style>{CSS}</style></head>
<body><main>
<h1>edgekd report — {_e(s.target)}, budget {s.budget_ms:g} ms</h1>
{_banners(r)}
<section id="summary"><h2>Summary</h2><div class="cards">{_cards(r, s)}</div>
<p style="font-size:.8rem">Measurement conditions: {_e(conditions(r.teacher.measurement))}.</p>
<p>{_e(facts.distillation(r))}</p>{f"<p><b>{_e(facts.baseline(r))}</b></p>" if r.baseline else ""}
{f'<p id="cut">Cut from the teacher: {_e(cut)}</p>' if (cut := facts.cut(r)) else ""}</section>
<section id="plots"><h2>Plots</h2><div class="grid">{figs}</div></section>
<section id="candidates"><h2>Candidates</h2>
{_candidates(r)}
</section>
{_precisions(r)}
{_per_class(r)}
<section id="host"><h2>Where and how busy</h2><p>{_e(facts.parallelism(r))}</p>{_boards(r)}{_host(r)}</section>
<section id="exports"><h2>Exports and parity</h2>{_exports(r)}</section>
<section id="config"><h2>Configuration and software</h2>{versions}
<pre>{_e(yaml.safe_dump(r.config, sort_keys=False))}</pre></section>
</main></body></html>
"""
