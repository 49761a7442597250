"""The search engine in process, with a fake trainer and a fake measurer: which trials screening
drops, which successive halving keeps, that duplicates share work, and that a second run reads
the state file and the rung files instead of training again."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.space import SearchSpace
from edgekd.profilers.measurement import Measurement, latency_stats
from edgekd.search.candidates import TrialStatus
from edgekd.search.engine import Search, SearchSettings
from edgekd.search.objective import Costs, CostWeights, Objective
from edgekd.search.students import Validation

SHAPE = [1, 3, 16, 16]


class FakeTrainer:
    """Real (tiny) EdgeNets, no training: accuracy grows with width, loss with nothing."""

    def __init__(self, forbid: bool = False):
        self.calls: list[tuple[str, int]] = []
        self.forbid = forbid

    def build(self, arch: ArchSpec) -> tuple[torch.nn.Module, str]:
        return build_model(arch, 3, 4), "from scratch (EdgeNet)"

    def bare(self, arch: ArchSpec) -> torch.nn.Module:
        return build_model(arch, 3, 4)

    def steps(self, epochs: int) -> int:
        return 2 * epochs

    def train(self, model, epochs, seed, on_step, on_epoch, shard=None):
        assert not self.forbid, "a resumed search trained again"
        self.calls.append((model.name, epochs))
        for e in range(epochs):
            on_step()
            on_step()
            on_epoch(e + 1, 1.0)
        return [1.0] * epochs

    def validate(self, model, onnx_path: Path, precision: str):
        acc = min(0.95, 0.5 + 0.2 * model.arch.width) if hasattr(model, "arch") else 0.9
        return Validation(accuracy=acc, kd_loss=1.0 - acc, cross_entropy=1.0 - acc), onnx_path


class FakeMeasurer:
    """p90 = width x `ms_per_width` ms; peak memory = width x 100 MB."""

    mode, runtime, describe = "measured", "fake", "fake measurer"

    def __init__(self, ms_per_width: float = 1.0):
        self.ms_per_width = ms_per_width
        self.screened: list[str] = []

    def _m(self, path: Path) -> Measurement:
        width = float(path.parent.name.split("-")[0][1:])  # candidates/w0.5-d1-e2-k3/...
        ms = width * self.ms_per_width
        return Measurement(target="cpu", runtime="fake", runtime_version="0", device="cpu", precision="fp32",
                           batch=1, input_shape=SHAPE, threads=1, latency_ms=latency_stats([ms] * 5, 0),
                           peak_memory_mb=100 * width, model_size_mb=0.1, energy_mj=None, mean_power_w=None,
                           energy_meter="none", source={"latency": "measured", "peak_memory": "measured"})

    def measure(self, path, shape, precision="fp32"):
        return self._m(path)

    def screen(self, path, shape, precision="fp32"):
        self.screened.append(path.parent.name)
        return self._m(path)


def objective(budget_ms: float, memory_mb: float | None = None) -> Objective:
    return Objective(lam=1.0, gamma=10.0, delta=0.0, weights=CostWeights(1.0, 0.0, 0.0), budget_ms=budget_ms,
                     reference=Costs(1.0, None, None), memory_budget_mb=memory_mb)


def expected_j(width: float, ms_per_width: float, budget_ms: float) -> float:
    acc = min(0.95, 0.5 + 0.2 * width)
    p90 = width * ms_per_width
    return (1.0 - acc) + p90 / 1.0 + (10.0 if p90 > budget_ms else 0.0)


def search(tmp_path: Path, settings: SearchSettings, budget_ms: float, trainer=None, measurer=None,
           memory_mb: float | None = None) -> tuple[Search, FakeTrainer, FakeMeasurer]:
    trainer = trainer or FakeTrainer()
    measurer = measurer or FakeMeasurer()
    s = Search(settings, objective(budget_ms, memory_mb), trainer, measurer, tmp_path, SHAPE,
               {"classes": ["a", "b", "c", "d"], "bands": ["R", "G", "B"], "image_size": 16, "dataset": "fake"})
    return s, trainer, measurer


def grid(*widths: float) -> SearchSettings:
    return SearchSettings(mode="grid", candidates=tuple(ArchSpec(width=w) for w in widths), student_epochs=2)


def test_grid_trains_every_candidate_once_and_scores_it(tmp_path):
    s, trainer, _ = search(tmp_path, grid(0.25, 0.5, 1.0), budget_ms=10)
    trials = s.run()
    assert [t.status for t in trials] == [TrialStatus.FINISHED] * 3
    assert trainer.calls == [("w0.25-d1-e2-k3", 2), ("w0.5-d1-e2-k3", 2), ("w1-d1-e2-k3", 2)]
    for t in trials:
        assert t.last.objective == pytest.approx(expected_j(t.arch.width, 1.0, 10))
        assert t.last.onnx == f"candidates/{t.arch.name}/rung0.onnx"  # relative to the run directory
        assert (tmp_path / t.last.onnx).is_file()
    assert s.seconds.keys() >= {"kd_training", "profiling", "screening"}


def test_screening_drops_slow_and_oversized_students_before_training(tmp_path):
    # budget 1 ms, slack 1.5: width 2 (p90 2 ms) is too slow; width 1.25 (125 MB) is over 120 MB
    s, trainer, _ = search(tmp_path, grid(0.5, 1.25, 2.0), budget_ms=1.0, memory_mb=120)
    by = {t.arch.width: t for t in s.run()}
    assert by[2.0].status == TrialStatus.SCREENED_OUT and by[2.0].screen.reason_kind == "latency"
    assert by[1.25].status == TrialStatus.SCREENED_OUT and by[1.25].screen.reason_kind == "memory"
    assert by[2.0].detail.startswith("screened out: p90 2.000 ms > 1.5 x budget")
    assert by[0.5].status == TrialStatus.FINISHED and by[0.5].screen.reason_kind == "ok"
    assert [name for name, _ in trainer.calls] == ["w0.5-d1-e2-k3"]  # no training spent on the others


def test_when_every_proposal_is_too_slow_the_fastest_are_trained(tmp_path):
    s, trainer, _ = search(tmp_path, grid(1.0, 2.0, 3.0), budget_ms=0.1)
    by = {t.arch.width: t for t in s.run()}
    assert [name for name, _ in trainer.calls] == ["w1-d1-e2-k3", "w2-d1-e2-k3"]  # ceil(3 / eta 2) = 2 fastest
    assert by[1.0].status == by[2.0].status == TrialStatus.FINISHED
    assert "trained anyway" in by[1.0].screen.reason
    assert by[3.0].status == TrialStatus.SCREENED_OUT and by[3.0].rungs == []


def test_successive_halving_keeps_exactly_the_better_half_of_each_rung(tmp_path):
    space = SearchSpace(widths=[0.25, 0.5, 0.75, 1.0, 1.25], stage_depths=[1], kernels=[3], expansions=[2])
    settings = SearchSettings(mode="tpe", search_space=space, trials=8, bracket_size=4, rungs=2, eta=2,
                              student_epochs=4, seed=3)
    s, trainer, _ = search(tmp_path, settings, budget_ms=100)
    trials = s.run()
    assert s.epochs == [2, 4] and len(trials) == 8
    seen: set[str] = set()
    for b in (0, 1):
        bracket = [t for t in trials if t.bracket == b]
        active = [t for t in bracket if t.name not in seen and t.status != TrialStatus.DUPLICATE]
        seen |= {t.name for t in bracket}
        ranked = sorted(active, key=lambda t: expected_j(t.arch.width, 1.0, 100))
        keep = {t.name for t in ranked[:math.ceil(len(active) / 2)]}
        for t in active:
            if t.name in keep:
                assert t.status == TrialStatus.FINISHED and [r.epochs for r in t.rungs] == [2, 4]
            else:
                assert t.status == TrialStatus.STOPPED_AT_RUNG and [r.epochs for r in t.rungs] == [2]
                assert t.detail == "stopped at rung 0 (2 epochs)"
    # rung 1 continues rung 0's checkpoint: 2 more epochs, never 4 from scratch
    assert all(epochs == 2 for _, epochs in trainer.calls)


def test_a_re_proposed_point_shares_the_first_proposals_work(tmp_path):
    space = SearchSpace(widths=[0.5], stage_depths=[1], kernels=[3], expansions=[2])
    settings = SearchSettings(mode="tpe", search_space=space, trials=4, bracket_size=2, rungs=1, student_epochs=1)
    s, trainer, measurer = search(tmp_path, settings, budget_ms=100)
    trials = s.run()
    assert [t.status for t in trials] == [TrialStatus.FINISHED] + [TrialStatus.DUPLICATE] * 3
    assert all(t.detail == "duplicate of w0.5-d1-e2-k3" and t.rungs == [] for t in trials[1:])
    assert trainer.calls == [("w0.5-d1-e2-k3", 1)] and measurer.screened == ["w0.5-d1-e2-k3"]
    import optuna

    study = optuna.load_study(study_name="edgekd", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    values = {t.value for t in study.trials}
    assert values == {trials[0].last.objective}  # the duplicates learnt the first proposal's outcome


def test_a_second_run_reads_the_state_file_and_trains_nothing(tmp_path):
    settings = SearchSettings(mode="tpe", search_space=SearchSpace(widths=[0.25, 0.5, 1.0], stage_depths=[1],
                              kernels=[3], expansions=[2]), trials=4, bracket_size=2, rungs=2, student_epochs=2)
    first = search(tmp_path, settings, budget_ms=100)[0].run()
    state = json.loads((tmp_path / "search.json").read_text())
    assert [[t["name"] for t in b] for b in state["brackets"]] == [[t.name for t in first[:2]],
                                                                  [t.name for t in first[2:]]]
    again, _, measurer = search(tmp_path, settings, budget_ms=100, trainer=FakeTrainer(forbid=True))
    second = again.run()
    assert [(t.name, t.status, len(t.rungs)) for t in second] == [(t.name, t.status, len(t.rungs)) for t in first]
    assert measurer.screened == []  # screening results came from the state file too


class Notes:
    def __init__(self):
        self.notes: list[str] = []

    def on_note(self, text):
        self.notes.append(text)

    def on_bracket(self, *a):
        pass

    def on_rung_start(self, *a):
        pass

    def on_step(self):
        pass

    def on_epoch(self, *a):
        pass

    def on_rung_end(self, *a):
        pass


def test_a_passed_deadline_proposes_nothing_new(tmp_path):
    settings = SearchSettings(mode="grid", candidates=(ArchSpec(width=0.5),), student_epochs=1, deadline=0.0)
    s, trainer, _ = search(tmp_path, settings, budget_ms=100)
    s.observer = notes = Notes()
    assert s.run() == [] and trainer.calls == []
    assert notes.notes == ["time budget (--max-minutes) reached: no new proposals"]


def test_a_deadline_during_screening_leaves_the_bracket_untrained(tmp_path):
    class SlowScreen(FakeMeasurer):
        def screen(self, path, shape, precision="fp32"):
            time.sleep(0.3)  # the deadline passes while screening
            return super().screen(path, shape, precision)

    settings = SearchSettings(mode="grid", candidates=(ArchSpec(width=0.5),), student_epochs=1,
                              deadline=time.perf_counter() + 0.1)
    s, trainer, _ = search(tmp_path, settings, budget_ms=100, measurer=SlowScreen())
    (t,) = s.run()
    assert t.status == TrialStatus.OUT_OF_TIME and t.detail == "not trained: time budget" and trainer.calls == []


def test_the_space_proposes_timm_students_beside_edgenets():
    import optuna

    from edgekd.models.arch import TimmSpec

    space = SearchSpace(families=["edgenet", "timm:mobilenetv3_small_050"], resolutions=[None, 48])
    spec, precision = space.sample(optuna.trial.FixedTrial(
        {"family": "timm:mobilenetv3_small_050", "resolution": 48, "precision": "fp32"}))
    assert spec == TimmSpec(model="mobilenetv3_small_050", resolution=48) and precision == "fp32"
    assert spec.name == "timm-mobilenetv3_small_050-r48"
    edge, _ = space.sample(optuna.trial.FixedTrial({"family": "edgenet", "depth0": 1, "depth1": 1, "depth2": 1,
                                                    "resolution": 0, "width": 0.5, "kernel": 3, "expansion": 2,
                                                    "precision": "fp32"}))
    assert edge == ArchSpec(width=0.5)


def test_a_grid_fits_students_cut_from_the_teacher_to_the_budget(tmp_path):
    from edgekd.models.arch import FROM_TEACHER_LADDER, FromTeacherSpec

    class ByShare(FakeMeasurer):
        """p90 = 4 ms x the share kept (read from the screened graph's name, screen/teacher-kK.onnx)."""

        def screen(self, path, shape, precision="fp32"):
            self.screened.append(path.stem)
            m = self._m(tmp_path / "w1" / "x.onnx")
            ms = 4.0 * float(path.stem.removeprefix("teacher-k"))
            return m.model_copy(update={"latency_ms": latency_stats([ms] * 5, 0)})

    class CutTrainer(FakeTrainer):
        def bare(self, arch):  # a structure per share: channels = 40 x the share kept
            return nn.Conv2d(3, round(40 * arch.keep), 1)

    edgenet = ArchSpec(width=0.5)
    settings = SearchSettings(mode="grid", candidates=(edgenet, FromTeacherSpec(keep=0.5), FromTeacherSpec(keep=0.35)),
                              student_epochs=2)
    s, _, measurer = search(tmp_path, settings, budget_ms=2.2, trainer=CutTrainer(), measurer=ByShare())
    fitted = s._fit_cuts(list(settings.candidates))
    # 0.5 is the least cut at or under 2.2 ms (4 x 0.5 = 2.0); its neighbours on the ladder go with it
    assert fitted == [edgenet, FromTeacherSpec(keep=0.6), FromTeacherSpec(keep=0.5), FromTeacherSpec(keep=0.42)]
    assert measurer.screened == [f"teacher-k{k:g}" for k in FROM_TEACHER_LADDER[:4]]  # stopped at the first fit
    # a budget nothing meets: the deepest cuts; no screening: the fixed shares as given
    s, _, _ = search(tmp_path / "tight", settings, budget_ms=0.1, trainer=CutTrainer(), measurer=ByShare())
    assert s._fit_cuts(list(settings.candidates))[1:] == [FromTeacherSpec(keep=k) for k in FROM_TEACHER_LADDER[-2:]]
    off = dataclasses.replace(settings, screen=False)
    s, _, _ = search(tmp_path / "off", off, budget_ms=2.2, trainer=CutTrainer(), measurer=ByShare())
    assert s._fit_cuts(list(settings.candidates)) == list(settings.candidates)


def test_the_budget_fit_skips_shares_that_cut_nothing(tmp_path):
    """On a small teacher light cuts round back to its whole structure: those shares are neither
    screened nor trained; a teacher no share cuts is refused."""
    from edgekd.models.arch import FROM_TEACHER_LADDER, FromTeacherSpec

    class ByShare(FakeMeasurer):
        def screen(self, path, shape, precision="fp32"):
            self.screened.append(path.stem)
            return self._m(tmp_path / "w1" / "x.onnx")  # fast: the first share screened fits

    class Rounding(FakeTrainer):
        def bare(self, arch):  # 16-channel groups: shares above 0.55 keep all 32 channels
            return nn.Conv2d(3, 32 if arch.keep > 0.55 else 16, 1)

    settings = SearchSettings(mode="grid", candidates=(FromTeacherSpec(keep=0.5),), student_epochs=2)
    s, _, measurer = search(tmp_path, settings, budget_ms=1e6, trainer=Rounding(), measurer=ByShare())
    fitted = s._fit_cuts(list(settings.candidates))
    first = next(k for k in FROM_TEACHER_LADDER if k <= 0.55)
    assert fitted == [FromTeacherSpec(keep=first)]  # the only distinct cut; nothing that cuts nothing
    assert measurer.screened == [f"teacher-k{first:g}"]

    class Whole(FakeTrainer):
        def bare(self, arch):
            return nn.Conv2d(3, 16, 1)

    s, _, _ = search(tmp_path / "whole", settings, budget_ms=1e6, trainer=Whole(), measurer=ByShare())
    with pytest.raises(ConfigError, match="cuts nothing"):
        s._fit_cuts(list(settings.candidates))
