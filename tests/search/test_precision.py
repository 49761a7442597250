"""Precisions kept only when measured faster than FP32 (edgekd.search.precision), through the
real search engine with a fake trainer and a measurer whose INT8 speed depends on the student."""

from pathlib import Path

import pytest

from edgekd.models.arch import ArchSpec
from edgekd.profilers.measurement import Conditions, ReferenceWindow
from edgekd.search.candidates import Candidate, RungResult, TrialStatus
from edgekd.search.engine import SearchSettings
from edgekd.search.precision import choose_precisions

from .test_engine import FakeMeasurer, search


class PrecisionMeasurer(FakeMeasurer):
    """FP32 p50 = width ms; INT8 is 1.3x slower below width 0.5 and 2x faster from it on (what
    tiny and larger students do on CPUs). `ratios`: also time each beside a teacher of `teacher_ms`."""

    def __init__(self, source: str = "measured", teacher_ms: float | None = None):
        super().__init__()
        self.source, self.teacher_ms = source, teacher_ms
        self.precisions: list[str] = []

    def measure(self, path, shape, precision="fp32"):
        self.precisions.append(precision)
        m = self._m(path)
        width = float(path.parent.name.split("-")[0][1:])
        factor = 1.0 if precision == "fp32" else (1.3 if width < 0.5 else 0.5)
        ms = width * factor
        stats = m.latency_ms.model_copy(update={"p10": ms, "p50": ms, "p90": ms, "p99": ms, "mean": ms})
        cond = None
        if self.teacher_ms is not None:
            cond = Conditions(reference=ReferenceWindow(model="teacher.onnx", p50=self.teacher_ms, p90=self.teacher_ms,
                                                        p10=self.teacher_ms, ratio_p50=ms / self.teacher_ms,
                                                        ratio_p10=ms / self.teacher_ms))
        return m.model_copy(update={"latency_ms": stats, "precision": precision, "conditions": cond,
                                    "source": {**m.source, "latency": self.source}})


def _run(tmp_path: Path, precisions: tuple[str, ...], measurer: PrecisionMeasurer) -> list[Candidate]:
    settings = SearchSettings(mode="grid", candidates=(ArchSpec(width=0.25), ArchSpec(width=1.0)),
                              precisions=precisions, student_epochs=1)
    s, _, _ = search(tmp_path, settings, budget_ms=10, measurer=measurer)
    return [Candidate.from_trial(t, 1, 1) for t in s.run()]


def _fp32(tmp_path: Path, cands: list[Candidate]) -> dict[tuple[str, int], RungResult]:
    return {(c.arch.name, c.rung): RungResult.model_validate_json(
        (tmp_path / "candidates" / c.arch.name / f"rung{c.rung}-fp32.json").read_text()) for c in cands}


def test_int8_slower_than_fp32_is_dropped_and_faster_is_kept(tmp_path):
    cands = _run(tmp_path, ("fp32", "int8"), PrecisionMeasurer())
    choices = choose_precisions(cands, _fp32(tmp_path, cands))
    status = {c.name: c.status for c in cands}
    assert status["w0.25-d1-e2-k3@int8"] == TrialStatus.SLOWER_THAN_FP32
    assert status["w1-d1-e2-k3@int8"] == TrialStatus.FINISHED
    assert status["w0.25-d1-e2-k3"] == status["w1-d1-e2-k3"] == TrialStatus.FINISHED
    small = next(c for c in choices if c.student == "w0.25-d1-e2-k3")
    assert [(t.precision, t.kept) for t in small.tried] == [("fp32", True), ("int8", False)]
    assert "int8 dropped: not faster than FP32" in small.reason and "0.3250 ms vs 0.2500 ms" in small.reason
    big = next(c for c in choices if c.student == "w1-d1-e2-k3")
    assert "int8 kept: faster than FP32" in big.reason
    dropped = next(c for c in cands if c.name == "w0.25-d1-e2-k3@int8")
    assert "no faster than FP32" in dropped.detail


def test_fp32_is_measured_as_the_reference_even_when_only_int8_is_searched(tmp_path):
    measurer = PrecisionMeasurer()
    cands = _run(tmp_path, ("int8",), measurer)
    assert {c.precision for c in cands} == {"int8"}
    assert measurer.precisions.count("fp32") == 2  # one FP32 reference per student
    choices = choose_precisions(cands, _fp32(tmp_path, cands))
    small = next(c for c in choices if c.student == "w0.25-d1-e2-k3")
    assert small.tried[0].precision == "fp32" and small.tried[0].kept is False  # measured, not a candidate


def test_the_interleaved_ratio_decides_when_both_have_one(tmp_path):
    cands = _run(tmp_path, ("fp32", "int8"), PrecisionMeasurer(teacher_ms=2.0))
    choices = choose_precisions(cands, _fp32(tmp_path, cands))
    small = next(c for c in choices if c.student == "w0.25-d1-e2-k3")
    assert small.tried[1].latency_ratio == 0.1625 and "timed beside it" in small.reason


def test_predicted_figures_do_not_drop_a_precision(tmp_path):
    cands = _run(tmp_path, ("fp32", "int8"), PrecisionMeasurer(source="predicted"))
    choices = choose_precisions(cands, _fp32(tmp_path, cands))
    assert all(c.status == TrialStatus.FINISHED for c in cands)
    small = next(c for c in choices if c.student == "w0.25-d1-e2-k3")
    assert "predicted, not measured" in small.reason


def test_a_student_without_lower_precisions_gets_no_record(tmp_path):
    cands = _run(tmp_path, ("fp32",), PrecisionMeasurer())
    assert choose_precisions(cands, {}) == []


def test_when_every_candidate_is_slower_than_fp32_the_error_names_the_fix(tmp_path):
    """INT8 alone searched, and slower than FP32 for the only student: nothing is selectable, and
    the selection says to search fp32 too instead of picking a slower model."""
    from types import SimpleNamespace

    from edgekd.errors import ConfigError
    from edgekd.models.family import build_model
    from edgekd.pipeline.stages import select_student

    settings = SearchSettings(mode="grid", candidates=(ArchSpec(width=0.25),), precisions=("int8",), student_epochs=1)
    s, _, _ = search(tmp_path, settings, budget_ms=10, measurer=PrecisionMeasurer())
    trials = s.run()
    ds = SimpleNamespace(in_channels=3, classes=["a", "b", "c", "d"], task="classification")
    plan = SimpleNamespace(run_dir=tmp_path, ds=ds,
                           input_shape=[1, 3, 16, 16], budget_ms=10.0)
    with pytest.raises(ConfigError, match=r"no faster than the FP32 version .* --precisions fp32,int8"):
        select_student(plan, trials, lambda arch: build_model(arch, 3, 4))
