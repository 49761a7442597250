"""Sentences both renderers (report.md, report.html) state the same way: warnings a reader must
see first, how the students were distilled, and what KD added over the no-KD baseline."""

from __future__ import annotations

from ..profilers.measurement import NOISY_P90_OVER_P50, NOISY_P99_OVER_P50
from .model import Report


def busy_names(r: Report) -> list[str]:
    """Models whose latency spread says the host was busy while they were measured."""
    names = [c.name for c in r.candidates if c.measurement.latency_ms.spread_warning]
    return names + (["teacher"] if r.teacher.measurement.latency_ms.spread_warning else [])


def banners(r: Report) -> list[tuple[str, str]]:
    """(kind, text) to show above everything: kind "warn" or "info"."""
    out = []
    if r.measurement.mode == "predicted":
        out.append(("warn", f"Latency, memory and energy are PREDICTED by the device model, not measured. "
                            f"{r.measurement.how}."))
    elif r.measurement.mode == "remote":
        out.append(("info", f"Figures measured on the device: {r.measurement.how}."))
    busy = busy_names(r)
    if busy:
        out.append(("warn", f"Busy host: the latency spread of {', '.join(busy)} (p90 over {NOISY_P90_OVER_P50:g}x "
                            f"p50, or p99 over {NOISY_P99_OVER_P50:g}x p50) says the machine was busy while they were "
                            "measured. Those figures were not cached; measure again on a quiet machine "
                            "before relying on them."))
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
    return (f"Students distilled with {terms}; response-type terms use alpha {kd.alpha:g} (cross-entropy share) "
            f"and temperature {kd.temperature:g}; teacher outputs cached for {kd.teacher_views} view(s) per image.")


def baseline(r: Report) -> str | None:
    """What KD added, from --baseline; None when the run had no baseline."""
    b = r.baseline
    if b is None:
        return None
    return (f"KD gain: {b.name} reached {b.kd_accuracy:.3f} with KD and {b.no_kd_accuracy:.3f} without "
            f"({b.kd_gain_points:+.2f} points; the same architecture, {b.epochs} epochs, data order and "
            "optimiser, cross-entropy only).")
