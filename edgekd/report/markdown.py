"""report.md: the facts of report.json as Markdown tables."""

from __future__ import annotations

from typing import Any

from ..profilers.measurement import Measurement
from . import facts
from .model import Report


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def conditions(m: Measurement) -> str:
    lat = m.latency_ms
    return (f"{m.runtime} {m.runtime_version} on {m.device}, {m.precision}, batch {m.batch}, "
            f"input {'x'.join(map(str, m.input_shape))}, {m.threads} threads, "
            f"{lat.warmup} warm-up + {lat.n} timed runs")


def _banners(r: Report) -> list[str]:
    out = []
    for kind, text in facts.banners(r):
        head, _, rest = text.partition(". ")
        out += [f"> **{head}.** {rest}" if kind == "warn" else f"> {text}", ""]
    return out


def _summary(r: Report) -> list[str]:
    best, ds = r.best, r.dataset
    tm, bm = r.teacher.measurement, best.measurement
    speedup = tm.latency_ms.p50 / bm.latency_ms.p50 if bm.latency_ms.p50 > 0 else None
    return ["## Summary", "", _table(["", ""], [
        ["target", f"{r.target.name} ({r.target.device_class})"],
        ["budget (p90)", f"{r.budget_ms:g} ms ({r.budget_source})"],
        ["selected student", f"**{r.selected}** — {r.selection_reason}"],
        [f"{facts.metric(r)} (val)", f"{best.val_accuracy:.3f} student vs {r.teacher.val_accuracy:.3f} teacher"],
        ["latency p50 / p90", f"{bm.latency_ms.p50:.3f} / {bm.latency_ms.p90:.3f} ms "
                              f"(teacher {tm.latency_ms.p50:.3f} / {tm.latency_ms.p90:.3f} ms)"],
        ["speed-up vs teacher (p50)", _f(speedup, 2) + "x"],
        *_cut(r),
        ["budget met", "yes" if best.meets_budget else "**no**"],
        ["energy / inference", f"{_f(bm.energy_mj, 4)} mJ ({bm.source.get('energy', 'not measured')})"],
        ["data set", f"{ds.name} ({'synthetic' if ds.synthetic else 'real'}), "
                     f"{len(ds.classes)} classes, {ds.sizes.train} train / {ds.sizes.val} val"],
    ]), "", f"Measurement conditions: {conditions(bm)}.", "", facts.distillation(r), ""] + (
        [facts.baseline(r) or "", ""] if r.baseline else [])


def _cut(r: Report) -> list[list[str]]:
    """A selected student cut from the teacher: what the cut removed, and its recovery."""
    text = facts.cut(r)
    return [["cut from the teacher", text]] if text else []


def _candidates(r: Report) -> list[str]:
    o = r.objective
    rows = []
    for c in sorted(r.candidates, key=lambda c: c.objective):
        m = c.measurement
        rows.append([f"**{c.name}**" if c.name == r.selected else c.name, f"{c.params:,}", f"{c.macs / 1e6:.2f}",
                     _f(c.val_accuracy), _f(c.val_kd_loss), _f(m.latency_ms.p50),
                     _f(m.latency_ms.p90) + (" (contended)" if m.contended else ""),
                     _f(m.latency_ms.p99), str(m.latency_ms.n), _f(m.peak_memory_mb, 2), _f(m.model_size_mb, 3),
                     _f(m.energy_mj, 4), _f(c.c_hw), _f(c.penalty, 1), _f(c.objective),
                     ", ".join(f"{k}: {v}" for k, v in m.source.items())])
    return ["## Candidates", "",
            f"J = L_KD,val + {o.lambda_:g}·C_hw + P_rt + {o.delta:g}·energy_mJ; "
            f"C_hw weights {o.weights} relative to the teacher; "
            f"P_rt = {o.gamma:g} when p90 > {r.budget_ms:g} ms.", "",
            _table(["candidate", "params", "MMACs", facts.val_label(r), "val KD loss", "p50 ms", "p90 ms", "p99 ms",
                    "n", "peak MB", "size MB", "energy mJ", "C_hw", "P_rt", "J", "sources"], rows), ""]


def _search(r: Report) -> list[str]:
    se = r.search
    rows = [[t.name, t.precision, t.detail or t.status.value,
             _f(t.screen.p90_ms) if t.screen else "–",
             "; ".join(f"{g.epochs}: {g.val_accuracy:.3f}, {g.objective:.3f}" for g in t.rungs) or "–"]
            for t in r.trials]
    return ["## Search", "",
            f"Mode {se.mode}, rungs at {se.rung_epochs} epochs (eta {se.eta}); {se.proposals} proposals, "
            f"{se.screened_out} screened out before training; {se.train_seconds_total:.1f} s of KD training, "
            f"{se.train_seconds_on_over_budget_students:.1f} s of it on students that ended over the budget. "
            f"Pareto front (accuracy, p90, energy): {', '.join(r.pareto_front) or '–'}.", "",
            _table(["trial", "precision", "status", "screen p90 ms", "rungs (epochs: val acc, J)"], rows), ""]


def _precisions(r: Report) -> list[str]:
    """Per student: each precision tried, its measured latency and accuracy, kept or dropped."""
    if not r.precisions:
        return []
    rows = [[p.student, f"r{p.rung}", t.precision, _f(t.p50_ms, 4), _f(t.p90_ms, 4),
             _f(t.latency_ratio) if t.latency_ratio is not None else "–", _f(t.val_accuracy),
             t.source + (" (contended)" if t.contended else ""), "kept" if t.kept else "dropped"]
            for p in r.precisions for t in p.tried]
    return ["## Precisions", "",
            "A lower precision is kept only when measured faster on the target than the FP32 version of the same "
            "student (the p10 ratio to the teacher timed beside it when there is one, else p50).", "",
            _table(["student", "rung", "precision", "p50 ms", "p90 ms", "p10 / teacher", facts.val_label(r), "source",
                    "verdict"], rows), ""] + [f"- {p.student} r{p.rung}: {p.reason}" for p in r.precisions] + [""]


def _per_class(r: Report) -> list[str]:
    out = []
    for m in r.per_class:
        for figs in filter(None, (m.validation, m.test)):
            out += [f"### {m.model}, {figs.split} split ({figs.n} images): accuracy {figs.accuracy:.3f}, balanced "
                    f"accuracy {figs.balanced_accuracy:.3f}, macro F1 {figs.macro_f1:.3f}", "",
                    _table(["class", "precision", "recall", "F1", "support"],
                           [[c.name, _f(c.precision), _f(c.recall), _f(c.f1), str(c.support)] for c in figs.classes]),
                    ""]
    for d in r.per_class_iou:
        for seg in filter(None, (d.validation, d.test)):
            out += [f"### {d.model}, {seg.split} split ({seg.n} tiles): mIoU {seg.miou:.3f} (over the classes "
                    f"present), pixel accuracy {seg.pixel_accuracy:.3f}", "",
                    _table(["class", "IoU", "pixels"], [[c.name, _f(c.iou), f"{c.pixels:,}"] for c in seg.classes]), ""]
    for d in r.scenes:
        seg = d.validation
        out += [f"### {d.model}, {seg.split}, {seg.n} scenes: mIoU {seg.miou:.3f}, pixel accuracy "
                f"{seg.pixel_accuracy:.3f}", "",
                _table(["class", "IoU", "pixels"], [[c.name, _f(c.iou), f"{c.pixels:,}"] for c in seg.classes]), ""]
    out += [facts.scene_cost(r), ""] if r.scene_cost else []
    out += [f"![validation tiles: image, truth, teacher, student]({p})" for p in r.mask_overlays]
    for title, rows in facts.detection_tables(r):
        out += [f"### {title}", "", _table(facts.DETECTION_HEADERS, rows), ""]
    out += [line + "\n" for line in facts.detection_lines(r)]
    drawn = r.detection.drawings if r.detection else []
    out += [f"![validation images: truth, teacher, student]({p})" for p in drawn]
    return ["## Per class", "", "The test split, when the data has one, is evaluated once at the end and never "
            "used for selection.", ""] + out if out else []


def _teacher(r: Report) -> list[str]:
    t, tm = r.teacher, r.teacher.measurement
    size = "" if t.params is None or t.macs is None else f"{t.params:,} params, {t.macs / 1e6:.2f} MMACs, "
    out = ["## Teacher", "",
           f"{t.name} ({t.origin}): {size}"
           f"val {facts.metric(r)} {t.val_accuracy:.3f}; p50 {tm.latency_ms.p50:.3f} ms, "
           f"p90 {tm.latency_ms.p90:.3f} ms, peak memory {_f(tm.peak_memory_mb, 2)} MB, "
           f"energy {_f(tm.energy_mj, 4)} mJ ({tm.source.get('energy', 'not measured')}).", ""]
    if t.bands and t.bands != r.dataset.bands:
        out += [f"Cross-modal distillation: the teacher sees bands {', '.join(t.bands)}, the students "
                f"{', '.join(r.dataset.bands)} (the same images and split).", ""]
    notes = sorted({n for c in r.candidates for n in c.measurement.notes} | set(tm.notes))
    return out + (["Notes: " + " ".join(notes), ""] if notes else [])


def _exports(r: Report) -> list[str]:
    return [
        "## Exports of the selected student", "",
        _table(["format", "file", "size MB", facts.agreement_label(r), f"{facts.metric(r)} Δ", "max |Δlogit|",
                "mean |Δlogit|", "checked with"],
               [[e.format, f"`{e.path}`", _f(e.size_mb, 3), _f(e.parity.top1_agreement, 4),
                 _f(e.parity.accuracy_delta, 4), f"{e.parity.max_abs_diff:.2e}",
                 f"{e.parity.mean_abs_diff:.2e}", facts.checked_with(e)] for e in r.exports]), "",
        *[f"- {e.format}: {n}" for e in r.exports for n in e.notes], "",
        *(["## Where and how busy", "", _table(facts.HOST_HEADERS, facts.host_rows(r)), ""] if facts.host_rows(r)
          else []),
        *(["## Boards", "", _table(facts.BOARD_HEADERS, facts.board_rows(r)), ""] if r.measurement.boards else []),
        "## Time per stage", "", facts.parallelism(r), "",
        _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in r.stage_seconds.items()]), "",
        "## Software", "",
        _table(["package", "version"], [[k, v] for k, v in r.software.items()]), "",
    ]


def render_markdown(r: Report) -> str:
    out = [f"# edgekd report — {r.target.name}, budget {r.budget_ms:g} ms", ""]
    for part in (_banners, _summary, _candidates, _precisions, _per_class, _search, _teacher, _exports):
        out += part(r)
    return "\n".join(out)
