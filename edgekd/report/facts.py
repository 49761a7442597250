"""Sentences both renderers (report.md, report.html) state the same way: warnings a reader must
see first, how the students were distilled, and what KD added over the no-KD baseline."""

from __future__ import annotations

from typing import Any

from .model import Report


def contended_names(r: Report) -> list[str]:
    """Models measured while the host was busy: pressure past the limit after the repeats, or a
    latency spread only a busy host gives."""
    names = [c.name for c in r.candidates if c.measurement.contended]
    return names + (["teacher"] if r.teacher.measurement.contended else [])


def banners(r: Report) -> list[tuple[str, str]]:
    """(kind, text) to show above everything: kind "warn" or "info"."""
    out = []
    if r.measurement.mode == "predicted":
        out.append(("warn", f"Latency, memory and energy are PREDICTED by the device model, not measured. "
                            f"{r.measurement.how}."))
    elif r.measurement.mode == "remote":
        out.append(("info", f"Figures measured on the device: {r.measurement.how}."))
    for d in r.measurement.disagreements:
        out.append(("warn", f"Boards {d.boards[0]} and {d.boards[1]} disagree on {d.model}: p50 {d.p50_ms[0]:.3f} vs "
                            f"{d.p50_ms[1]:.3f} ms (x{d.ratio:.2f}, tolerance {d.tolerance:.0%}). A throttled or "
                            "misconfigured board gives such figures: check its clocks, power mode and cooling."))
    gone = [b for b in r.measurement.boards if b.state == "out"]
    if gone:
        out.append(("warn", "Boards taken out of the pool: " + "; ".join(f"{b.board} ({b.why})" for b in gone)
                    + ". Their jobs went to the other boards."))
    busy = contended_names(r)
    if busy:
        out.append(("warn", f"Contended host: {', '.join(busy)} were measured while other work held the CPUs (CPU "
                            "pressure, steal time or latency spread past their limits, after repeated tries; each "
                            "figure's conditions say which). Those figures were not cached; measure again on a quiet "
                            "machine before relying on them."))
    if r.dataset.synthetic:
        out.append(("info", f"Data set: synthetic. {r.dataset.source}. Accuracy figures describe this generated "
                            "data, not real imagery."))
    if r.dataset.subsampled:
        out.append(("info", f"Data subsampled: {r.dataset.subsampled}."))
    return out


def distillation(r: Report) -> str:
    """How the students were distilled: the KD terms with their weights, alpha, temperature, views."""
    kd = r.objective.kd
    terms = ", ".join(f"{t.name} (weight {t.weight:g})" for t in kd.terms)
    extra = ""
    if kd.weighting != "none":
        extra += f"; soft-target losses weighted per sample by the teacher's {kd.weighting} (batch mean 1)"
    if kd.det_head == "gfl":
        extra += ("; the detectors edgekd built have GFL-style box heads (each side a distribution over 0..16 "
                  "strides" + (", distilled by ld at the temperature" if any(t.name == "ld" for t in kd.terms)
                               else "") + ")")
    if any(t.name == "feature" for t in kd.terms):
        extra += (f"; feature distance {kd.feature_distance}"
                  + (", weighted by the teacher's attention map" if kd.feature_importance == "attention" else ""))
    return (f"Students distilled with {terms}; response-type terms use alpha {kd.alpha:g} (cross-entropy share) "
            f"and temperature {kd.temperature:g}{extra}; teacher outputs cached for {kd.teacher_views} view(s) "
            "per image.")


def baseline(r: Report) -> str | None:
    """What KD added, from --baseline; None when the run had no baseline."""
    b = r.baseline
    if b is None:
        return None
    return (f"KD gain: {b.name} reached {b.kd_accuracy:.3f} with KD and {b.no_kd_accuracy:.3f} without "
            f"({b.kd_gain_points:+.2f} points; the same architecture, {b.epochs} epochs, data order and "
            "optimiser, cross-entropy only).")


HOST_HEADERS = ["model", "source", "host", "threads", "CPU pressure", "tries", "contended", "governor / MHz",
                "power mode", "teacher beside"]


def host_rows(r: Report) -> list[list[str]]:
    """Per measured model: where and under what load it was measured (both renderers escape)."""
    rows = []
    for name, m in [("teacher", r.teacher.measurement)] + [(c.name, c.measurement) for c in r.candidates]:
        c = m.conditions
        if c is None:
            continue
        h, p = c.host, c.pressure
        load = "–" if p is None else (f"{p.during:.0%} ({'PSI' if p.source == 'psi' else 'others CPU'}"
                                      + (f", steal {p.steal:.0%}" if p.steal else "") + ")")
        clock = " / ".join(str(v) for v in (h.get("governor"), h.get("cpu_mhz")) if v is not None) or "not readable"
        beside = "–" if c.reference is None else (f"p10 x{c.reference.ratio_p10:.3f}, p50 x{c.reference.ratio_p50:.3f} "
                                                  f"of {c.reference.p50:.3f} ms")
        rows.append([name, m.source.get("latency", "?"), str(m.board or h.get("board") or h.get("host") or "?"),
                     str(m.threads),
                     load, str(c.attempts), c.contended or "no", clock, str(h.get("power_mode") or "–"), beside])
    return rows


BOARD_HEADERS = ["board", "URL", "target", "state", "jobs", "seconds", "why out"]


def board_rows(r: Report) -> list[list[str]]:
    """The pool's boards: what each measured, or why it left (both renderers escape)."""
    return [[b.board, b.url, b.target or "–", b.state, str(b.jobs), f"{b.seconds:.1f}", b.why or "–"]
            for b in r.measurement.boards]


def parallelism(r: Report) -> str:
    """Who did the work: training processes and measuring boards."""
    p = r.parallelism
    boards = (f"{p.boards} board(s) measured" if p.boards else
              "measured on this machine" if r.measurement.mode == "measured" else "predicted, no board")
    return f"{p.training_workers} training worker(s); {boards}."


def checked_with(e) -> str:
    """Where and how an export's parity was checked: the runtime and, where it has one, the
    execution precision (OpenVINO's hint), with the plugin default's agreement when it differs."""
    how = e.runtime + (f", {e.execution['INFERENCE_PRECISION_HINT']}" if "INFERENCE_PRECISION_HINT" in e.execution
                       else "")
    if e.parity_plugin_default is not None:
        how += f" (plugin default: agreement {e.parity_plugin_default.top1_agreement:.4f})"
    return how


def scene_cost(r: Report) -> str:
    """The whole-scene cost sentence of a segmentation report ("" for other tasks)."""
    c = r.scene_cost
    if c is None:
        return ""
    return (f"Whole-scene cost ({c.source} p50 of one tile x tiles per megapixel of {c.basis}; {c.tile} px tiles, "
            f"{c.overlap} px overlap): student {c.student_ms_per_mp:g} ms/MP, teacher {c.teacher_ms_per_mp:g} ms/MP.")


def metric(r: Report) -> str:
    """The name of the task's metric, which every accuracy figure of the report is in."""
    return r.metric


def val_label(r: Report) -> str:
    """The column heading of the validation metric: val acc, val mIoU."""
    return "val acc" if r.metric == "accuracy" else f"val {r.metric}"


def agreement_label(r: Report) -> str:
    return "pixel agreement" if r.metric == "mIoU" else "top-1 agreement"


def cut(r: Report) -> str | None:
    """What cutting the selected student from the teacher removed (params, MACs, p50 before and
    after, the blocks dropped) and how it recovered; None when it was not cut from the teacher."""
    best, t = r.best, r.teacher
    if getattr(best.arch, "family", None) != "from-teacher":
        return None
    arch: Any = best.arch
    c = best.cut
    macs = f"MMACs {t.macs / 1e6:.1f} → {best.macs / 1e6:.1f}, " if t.macs else ""
    params = f"params {t.params:,} → {best.params:,}, " if t.params else ""
    share = f" (channels {c.channels_kept:.0%} of the teacher's, {c.layers_cut} groups cut)" if c else ""
    blocks = (f"; {len(c.blocks_dropped)} residual blocks dropped by {c.depth_importance} importance "
              f"({', '.join(c.blocks_dropped)})" if c and c.blocks_dropped else "")
    return (f"{arch.keep:.0%} of each layer's channels kept ({arch.importance} importance"
            f"{f', run at {arch.resolution} px' if arch.resolution else ''}){share}{blocks}: {params}{macs}p50 "
            f"{t.measurement.latency_ms.p50:.3f} → {best.measurement.latency_ms.p50:.3f} ms; recovered by "
            f"{best.epochs} KD epochs from the unshrunk teacher")


DETECTION_HEADERS = ["class", "AP50"]


def detection_tables(r: Report) -> list[tuple[str, list[list[str]]]]:
    """(title, rows of class and AP50) per model and split of a detection run."""
    out: list[tuple[str, list[list[str]]]] = []
    for m in r.detection.figures if r.detection else []:
        for f in filter(None, (m.validation, m.test)):
            title = (f"{m.model}, {f.split} split ({f.n} images): mAP50 {f.map50:.3f}, mAP@[.5:.95] {f.map:.3f}, "
                     f"AP small/medium/large {_ap(f.map_small)}/{_ap(f.map_medium)}/{_ap(f.map_large)}")
            out.append((title, [[c, _ap(v)] for c, v in f.per_class_ap50.items()]))
    return out


def _ap(v: float) -> str:
    return "n/a" if v < 0 else f"{v:.3f}"


def detection_lines(r: Report) -> list[str]:
    """The deployable export with NMS inside, its agreement with PyTorch, the stage times."""
    d = r.detection
    if d is None:
        return []
    out = []
    if d.nms_export:
        out.append(f"Deployable graph with decoding and NMS inside: {d.nms_export} (outputs boxes, scores, labels); "
                   f"against PyTorch: {d.nms_agreement}.")
    if d.nms_openvino_agreement:
        out.append(f"OpenVINO IR of that graph: {d.nms_openvino or 'none'}; {d.nms_openvino_agreement}.")
    st = d.stages
    if st is not None:
        total = st.preprocess_ms + st.network_ms + st.postprocess_ms
        share = (lambda v: f"{100 * v / total:.0f} %") if total > 0 else (lambda v: "n/a")
        out.append(f"End to end at batch 1 ({st.source}; {st.runtime}, {st.threads} threads; frame {st.frame}): "
                   f"pre-processing {st.preprocess_ms:.3f} ms ({share(st.preprocess_ms)}), network "
                   f"{st.network_ms:.3f} ms ({share(st.network_ms)}), decoding + NMS {st.postprocess_ms:.3f} ms "
                   f"({share(st.postprocess_ms)})"
                   + (f" per slice, x {st.slices} slices + merge {st.merge_ms:.3f} ms" if st.slices > 1 else "")
                   + f"; {st.frame_ms:.3f} ms a frame, {st.fps:.1f} frames/s.")
    if d.calibration:
        out.append(f"INT8 calibration images: {d.calibration}.")
    return out
