"""Precision chosen by measured speed: a lower precision of a student (int8, int8-qat) is kept
only when it was measured faster on the target than the FP32 version of the same student at the
same rung -- INT8 is slower than FP32 for the smallest students on some CPUs (quantize and
dequantize steps cost more than the arithmetic they save). Predicted figures do not decide:
a precision scored only by the device model is kept, and the record says it was not measured.

Faster is judged on the interleaved window when both versions have one (the ratio of p10s to the
teacher timed beside each, robust to a busy host), else on the p50s of their own windows."""

from __future__ import annotations

from pydantic import BaseModel

from .candidates import Candidate, RungResult, TrialStatus


class PrecisionTrial(BaseModel):
    """One precision of a student, as measured."""

    precision: str
    p50_ms: float
    p90_ms: float
    latency_ratio: float | None  # p10 / teacher's p10, timed interleaved; None without that window
    val_accuracy: float
    source: str  # measured / remote / predicted / cached
    contended: bool = False
    kept: bool = True


class PrecisionChoice(BaseModel):
    """The precisions tried for one student (architecture and rung), which were kept and why."""

    student: str
    rung: int
    tried: list[PrecisionTrial]
    reason: str


def _trial(precision: str, r: RungResult, kept: bool = True) -> PrecisionTrial:
    m = r.measurement
    window = m.conditions.reference if m.conditions is not None else None
    return PrecisionTrial(precision=precision, p50_ms=m.latency_ms.p50, p90_ms=m.latency_ms.p90,
                          latency_ratio=window.ratio_p10 if window is not None else None,
                          val_accuracy=r.val_accuracy, source=m.source["latency"], contended=bool(m.contended),
                          kept=kept)


def faster(low: PrecisionTrial, fp32: PrecisionTrial) -> tuple[bool, str]:
    """Whether `low` was measured faster than `fp32`, and the figures that say so."""
    if low.latency_ratio is not None and fp32.latency_ratio is not None:
        return (low.latency_ratio < fp32.latency_ratio,
                f"p10 {low.latency_ratio:.3f}x vs {fp32.latency_ratio:.3f}x the teacher's, timed beside it")
    return low.p50_ms < fp32.p50_ms, f"p50 {low.p50_ms:.4f} ms vs {fp32.p50_ms:.4f} ms"


def choose_precisions(candidates: list[Candidate], fp32_results: dict[tuple[str, int], RungResult],
                      metric: str = "accuracy") -> list[PrecisionChoice]:
    """Mark every lower-precision candidate that is not faster than its FP32 version
    (status SLOWER_THAN_FP32, out of the selection) and say, per student, what was tried and kept.
    `fp32_results[(arch name, rung)]`: the FP32 figures of each student at each rung (the FP32
    version is measured even when fp32 is not a searched precision)."""
    choices = []
    by_student: dict[tuple[str, int], list[Candidate]] = {}
    for c in candidates:
        by_student.setdefault((c.arch.name, c.rung), []).append(c)
    for (name, rung), group in by_student.items():
        lower = [c for c in group if c.precision != "fp32"]
        ref = fp32_results.get((name, rung))
        if not lower or ref is None:
            continue
        base = _trial("fp32", ref, kept=any(c.precision == "fp32" for c in group))
        tried, said = [base], []
        for c in lower:
            ok, figures = faster(_trial(c.precision, c), base)
            predicted = c.measurement.source["latency"] == "predicted" or base.source == "predicted"
            keep = ok or predicted
            tried.append(_trial(c.precision, c, kept=keep))
            verdict = ("kept: predicted, not measured -- measure on the target to decide" if predicted and not ok
                       else "kept: faster than FP32" if ok else "dropped: not faster than FP32")
            said.append(f"{c.precision} {verdict} ({figures}; {metric} {c.val_accuracy:.3f} vs {ref.val_accuracy:.3f})")
            if not keep:
                c.status = TrialStatus.SLOWER_THAN_FP32
                c.detail = f"{c.precision} measured no faster than FP32 ({figures}): dropped"
        choices.append(PrecisionChoice(student=name, rung=rung, tried=tried, reason="; ".join(said)))
    return choices
