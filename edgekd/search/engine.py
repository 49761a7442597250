"""The hardware-aware search (DESIGN.md section 2): proposals -> cheap screen (predicted or
quickly measured latency, memory fit) -> KD training by successive halving, re-profiled and
scored by J after every rung. Every unit of work is a file in the run directory, so a killed
run resumes where it stopped and nothing finished is recomputed.

The engine owns the files, the schedule and the states; what trains a student (`StudentTrainer`),
what measures it (`Measurer`) and who hears of progress (`SearchObserver`) are given to it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ..config import RunConfig
from ..convert.onnx import to_onnx
from ..errors import ConfigError
from ..files import atomic_write
from ..models.arch import (
    FROM_TEACHER_LADDER,
    ArchSpec,
    ExternalSpec,
    FromTeacherSpec,
    StudentSpec,
    expand_students,
    parse_students,
)
from ..models.space import SearchSpace
from .candidates import QAT, RungResult, Screen, TrialRecord, TrialStatus, costs_of, runtime_precision
from .objective import Objective
from .observer import SearchObserver, SilentObserver
from .students import StudentTrainer, Validation, qat_paths
from .workers import Progress, RayWorkers, RungUnit, train_rung

if TYPE_CHECKING:
    from ..measurers import Measurer
    from ..profilers.measurement import Measurement


@dataclass(frozen=True)
class SearchSettings:
    """The part of the run configuration the search reads."""

    mode: Literal["grid", "tpe", "nsga2"] = "grid"
    candidates: tuple[ArchSpec | ExternalSpec, ...] = ()
    precisions: tuple[str, ...] = ("fp32",)
    search_space: SearchSpace = field(default_factory=SearchSpace)
    trials: int = 16
    bracket_size: int = 8
    rungs: int = 3
    eta: int = 2
    student_epochs: int = 8
    screen: bool = True
    screen_slack: float = 1.5
    seed: int = 0
    deadline: float | None = None  # time.perf_counter() value after which nothing new starts

    @classmethod
    def from_config(cls, cfg: RunConfig, deadline: float | None = None) -> SearchSettings:
        edgenet, timm_students = parse_students(cfg.students)
        candidates = (tuple(cfg.candidates) if edgenet else ()) + tuple(timm_students)
        precisions = (cfg.search_space.precisions if "precisions" in cfg.search_space.model_fields_set
                      else list(cfg.precisions))  # --precisions feeds the sampler too, unless the space names its own
        space = cfg.search_space.model_copy(update={"families": expand_students(cfg.students),
                                                    "precisions": precisions})
        return cls(mode=cfg.search, candidates=candidates, precisions=tuple(cfg.precisions),
                   search_space=space, trials=cfg.trials, bracket_size=cfg.bracket_size, rungs=cfg.rungs,
                   eta=cfg.eta, student_epochs=cfg.student_epochs, screen=cfg.screen, screen_slack=cfg.screen_slack,
                   seed=cfg.seed, deadline=deadline)

    @property
    def rung_epochs(self) -> list[int]:
        return [self.student_epochs] if self.mode == "grid" else rung_epochs(self.student_epochs, self.rungs, self.eta)

    @property
    def brackets(self) -> int:
        return 1 if self.mode == "grid" else math.ceil(self.trials / self.bracket_size)


def rung_epochs(total: int, rungs: int, eta: int) -> list[int]:
    """Cumulative epochs at each rung: total / eta^(rungs-1), ..., total / eta, total."""
    return sorted({max(1, math.ceil(total / eta ** (rungs - 1 - r))) for r in range(rungs)})


def survivors(results: list[tuple[str, float]], eta: int) -> list[str]:
    """The best ceil(n / eta) names by objective (lower is better)."""
    keep = math.ceil(len(results) / eta)
    return [name for name, _ in sorted(results, key=lambda r: r[1])[:keep]]


def result_line(name: str, r: RungResult, budget_ms: float, metric: str = "accuracy") -> str:
    """One line per evaluated candidate and rung: accuracy, p90 against the budget, J."""
    m = r.measurement
    verdict = "meets" if r.meets_budget else "[red]over[/]"
    return (f"{name} r{r.rung} ({r.epochs} epochs): val {metric} {r.val_accuracy:.3f}, p90 "
            f"{m.latency_ms.p90:.3f} ms {m.source['latency']}{' [yellow]CONTENDED[/]' if m.contended else ''} "
            f"({verdict} the {budget_ms:g} ms budget), J {r.objective:.3f}")


def unit_seed(seed: int, name: str, part: str) -> int:
    """The seed of one unit of work, from the run's seed and the unit's identity only: a resumed
    run draws the same numbers for a unit as an uninterrupted one, whatever ran before it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}:{part}".encode()).digest()[:4], "little") & 0x7FFFFFFF


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """PyTorch's global RNG seeded for a block and restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def trial_name(arch: StudentSpec, precision: str) -> str:
    return arch.name + ("" if precision == "fp32" else f"@{precision}")


class Search:
    """Runs the search of `settings` in `run_dir`; `run()` returns every trial, in order."""

    def __init__(self, settings: SearchSettings, objective: Objective, trainer: StudentTrainer, measurer: Measurer,
                 run_dir: Path, input_shape: list[int], checkpoint_meta: dict[str, Any],
                 observer: SearchObserver | None = None, on_time: Callable[[str, float], None] | None = None,
                 workers: RayWorkers | None = None):
        self.settings, self.objective, self.trainer, self.measurer = settings, objective, trainer, measurer
        self.on_time = on_time  # each stage's seconds as they pass (the run records them as it goes)
        self.run_dir, self.shape, self.meta = run_dir, input_shape, checkpoint_meta
        self.observer = observer or SilentObserver()
        self.state_file = run_dir / "search.json"
        self.epochs = settings.rung_epochs
        self.seconds: dict[str, float] = {}
        self.workers = workers  # Ray tasks for the rungs' training (None: in this process)

    # -- files ---------------------------------------------------------------------------------
    def _dir(self, arch: StudentSpec) -> Path:
        return self._unit().folder(arch)

    def _time(self, stage: str, t0: float) -> None:
        took = time.perf_counter() - t0
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + took, 3)
        if self.on_time is not None:
            self.on_time(stage, took)

    def _past_deadline(self) -> bool:
        return self.settings.deadline is not None and time.perf_counter() > self.settings.deadline

    # -- units of work -------------------------------------------------------------------------
    def _unit(self) -> RungUnit:
        return RungUnit(self.trainer, self.run_dir, self.epochs, self.settings.seed, self.meta)

    def train_rung(self, arch: StudentSpec, rung: int) -> tuple[nn.Module, dict[str, Any]]:
        """The architecture trained to `self.epochs[rung]` epochs (continuing its previous rung)."""
        o = self.observer
        return train_rung(self._unit(), arch, rung, Progress(
            note=o.on_note, start=o.on_rung_start, step=o.on_step, epoch=o.on_epoch, end=o.on_rung_end,
            seconds=lambda s: self._time("kd_training", time.perf_counter() - s)))

    def train_all(self, archs: list[StudentSpec], rung: int) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        """Every architecture's rung: as Ray tasks in parallel when the run has workers (their files
        are then read back), else one after another in this process."""
        if self.workers is not None and self.workers.data_parallel > 1:
            for a in archs:
                label = f"KD {a.name} r{rung}: data-parallel on {self.workers.data_parallel} Ray Train workers"
                self.observer.on_rung_start(label, 1, self.workers.describe())
                t0 = time.perf_counter()
                self.workers.train_data_parallel(self._unit(), a, rung)
                self._time("kd_training", t0)
                self.observer.on_step()
                self.observer.on_rung_end(label)
        elif self.workers is not None and len(archs) > 1:
            label = f"KD r{rung}: {len(archs)} students on {self.workers.workers} Ray workers"
            self.observer.on_rung_start(label, len(archs), self.workers.describe())
            t0 = time.perf_counter()
            self.workers.train_many(self._unit(), archs, rung, self.observer.on_note, self.observer.on_step)
            self._time("kd_training", t0)
            self.observer.on_rung_end(label)
        return {a.name: self.train_rung(a, rung) for a in archs}

    def evaluate_rung(self, arch: StudentSpec, precision: str, rung: int, model: nn.Module,
                      info: dict[str, Any]) -> RungResult:
        return self.evaluate_many([(arch, precision)], rung, {arch.name: (model, info)})[(arch.name, precision)]

    def evaluate_many(self, wanted: list[tuple[StudentSpec, str]], rung: int,
                      trained: dict[str, tuple[nn.Module, dict[str, Any]]]) -> dict[tuple[str, str], RungResult]:
        """Every (architecture, precision) of the rung exported, validated and measured: the
        measurements go to the measurer together (a pool of boards takes them in parallel)."""
        done: dict[tuple[str, str], RungResult] = {}
        todo: list[tuple[StudentSpec, str, Path, Validation]] = []
        t0 = time.perf_counter()
        for arch, precision in wanted:
            out = self._dir(arch) / f"rung{rung}-{precision}.json"
            if (arch.name, precision) in done or any(a.name == arch.name and p == precision for a, p, _, _ in todo):
                continue
            if out.exists():
                done[(arch.name, precision)] = RungResult.model_validate_json(out.read_text())
                continue
            model = trained[arch.name][0]
            onnx_path = self._dir(arch) / f"rung{rung}.onnx"
            if not onnx_path.exists():
                to_onnx(model, onnx_path, self.shape)
            if precision == QAT:
                onnx_path = self._quantization_aware(arch, rung, model, onnx_path)
            val, onnx_path = self.trainer.validate(model, onnx_path, precision)
            todo.append((arch, precision, onnx_path, val))
        measured = measure_all(self.measurer, [(path, self.shape, runtime_precision(precision))
                                               for _, precision, path, _ in todo])
        for (arch, precision, onnx_path, val), m in zip(todo, measured):
            info = trained[arch.name][1]
            score = self.objective.score(val.kd_loss, costs_of(m, self.objective.delta), m.latency_ms.p90)
            res = RungResult(rung=rung, epochs=info["epochs"], train_seconds=info["train_seconds"],
                             train_loss=info["train_loss"], start=info.get("start", ""),
                             val_accuracy=val.accuracy, val_kd_loss=val.kd_loss,
                             val_cross_entropy=val.cross_entropy,
                             onnx=onnx_path.relative_to(self.run_dir).as_posix(), measurement=m,
                             **score.model_dump())
            atomic_write(self._dir(arch) / f"rung{rung}-{precision}.json", res.model_dump_json())
            done[(arch.name, precision)] = res
        if todo:
            self._time("profiling", t0)
        return done

    def _quantization_aware(self, arch: StudentSpec, rung: int, model: nn.Module, onnx_path: Path) -> Path:
        """The INT8 graph of the rung's quantization-aware fine-tuning (done once: a resumed run
        finds it next to the rung's ONNX export)."""
        out, saved = qat_paths(onnx_path)
        if out.exists() and saved.exists():
            return out
        label = f"QAT {arch.name} r{rung}"
        epochs = self.trainer.qat_epochs
        self.observer.on_rung_start(label, self.trainer.steps(epochs), "fake-quantized, distilled")
        t0 = time.perf_counter()
        with seeded(unit_seed(self.settings.seed, arch.name, f"qat{rung}")):
            out, _ = self.trainer.quantization_aware(model, onnx_path, self.settings.seed + rung, self.observer.on_step,
                                                     lambda e, value: self.observer.on_epoch(label, e, epochs, value))
        self._time("qat_training", t0)
        self.observer.on_rung_end(label)
        return out

    def screen(self, arch: StudentSpec, precision: str) -> Screen:
        """Drop a proposal before any training when its latency (untrained weights: latency does
        not depend on their values) is far over the budget, or its memory cannot fit."""
        if not self.settings.screen:
            return Screen(passed=True, reason_kind="off", reason="screening off", signal="none", p90_ms=0.0,
                          peak_memory_mb=None)
        t0 = time.perf_counter()
        path = self._dir(arch) / "screen.onnx"
        if not path.exists():
            to_onnx(self.trainer.bare(arch), path, self.shape)
        if runtime_precision(precision) == "int8" and self.measurer.mode == "measured":
            path = _int8_screen_graph(path, self.shape)
        m = self.measurer.screen(path, self.shape, runtime_precision(precision))
        self._time("screening", t0)
        limit = self.objective.budget_ms * self.settings.screen_slack
        found = dict(signal=f"{m.source['latency']} ({m.runtime})", p90_ms=m.latency_ms.p90,
                     peak_memory_mb=m.peak_memory_mb)
        if m.latency_ms.p90 > limit:
            return Screen(passed=False, reason_kind="latency", **found,
                          reason=f"p90 {m.latency_ms.p90:.3f} ms > {self.settings.screen_slack:g} x budget "
                                 f"({limit:g} ms)")
        mem_budget = self.objective.memory_budget_mb
        if m.peak_memory_mb is not None and mem_budget is not None and m.peak_memory_mb > mem_budget:
            return Screen(passed=False, reason_kind="memory", **found,
                          reason=f"peak memory {m.peak_memory_mb:.0f} MB > budget {mem_budget:g} MB")
        return Screen(passed=True, reason_kind="ok", reason="within budget", **found)

    def _fit_cuts(self, candidates: list[StudentSpec]) -> list[StudentSpec]:
        """Students cut from the teacher, fitted to the budget: the shares of FROM_TEACHER_LADDER
        are screened from the least cut down (untrained structures, as screening measures them)
        until one's p90 meets the budget; that share and its neighbours on the ladder stand in for
        the fixed ones. Unchanged without screening or without cut students."""
        cuts = [a for a in candidates if isinstance(a, FromTeacherSpec)]
        if not cuts or not self.settings.screen:
            return candidates
        t0, template, budget = time.perf_counter(), cuts[0], self.objective.budget_ms
        folder = self.run_dir / "screen"
        folder.mkdir(parents=True, exist_ok=True)
        ladder = self._distinct_cuts(template)
        found, seen = len(ladder) - 1, []
        for i, (keep, model) in enumerate(ladder):
            path = folder / f"{template.model_copy(update={'keep': keep}).name}.onnx"
            to_onnx(model, path, self.shape)
            p90 = self.measurer.screen(path, self.shape, "fp32").latency_ms.p90
            seen.append(f"{keep:g}: {p90:.3f} ms")
            if p90 <= budget:
                found = i
                break
        self._time("screening", t0)
        fitted = [template.model_copy(update={"keep": k}) for k, _ in ladder[max(found - 1, 0):found + 2]]
        self.observer.on_note(f"from-teacher: p90 of the cut structures by share kept ({', '.join(seen)}; budget "
                              f"{budget:.4g} ms): training {', '.join(f.name for f in fitted)}")
        at = candidates.index(template)  # the fitted cuts stand where the fixed ones stood
        rest = [a for a in candidates if not isinstance(a, FromTeacherSpec)]
        return [*rest[:at], *fitted, *rest[at:]]

    def _distinct_cuts(self, template: FromTeacherSpec) -> list[tuple[float, nn.Module]]:
        """The ladder's shares whose cut structures differ from the whole teacher and from each
        other: on a small model rounding to whole channel groups gives a light cut back the
        teacher's own structure (nothing cut), which is not a student worth training."""
        whole = _param_count(self.trainer.bare(template.model_copy(update={"keep": 1.0})))
        out: list[tuple[float, nn.Module]] = []
        sizes = {whole}
        for keep in FROM_TEACHER_LADDER:
            model = self.trainer.bare(template.model_copy(update={"keep": keep}))
            n = _param_count(model)
            if n not in sizes:
                sizes.add(n)
                out.append((keep, model))
        if not out:
            raise ConfigError("every share on the from-teacher ladder cuts nothing from this teacher (its layers are "
                              "narrower than one channel group): choose other --students")
        return out

    # -- proposals -----------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {"brackets": []}

    def _save_bracket(self, state: dict[str, Any], b: int, bracket: list[TrialRecord]) -> None:
        dumped = [t.model_dump(mode="json") for t in bracket]
        if b < len(state["brackets"]):
            state["brackets"][b] = dumped
        else:
            state["brackets"].append(dumped)
        atomic_write(self.state_file, json.dumps(state, indent=1))

    def _study(self, bracket: int) -> Any:
        """The study in optuna.db with a sampler seeded for this bracket: the sampler's RNG state
        is not stored, so a resumed run that reseeded once would propose other points than an
        uninterrupted one; seeded per bracket, both propose the same from the same history."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = self.settings
        storage = f"sqlite:///{self.run_dir / 'optuna.db'}"
        seed = unit_seed(s.seed, "proposals", f"bracket{bracket}")
        if s.mode == "nsga2":
            return optuna.create_study(study_name="edgekd", storage=storage, load_if_exists=True,
                                       directions=["minimize", "minimize"],
                                       sampler=optuna.samplers.NSGAIISampler(seed=seed))
        return optuna.create_study(study_name="edgekd", storage=storage, load_if_exists=True, direction="minimize",
                                   sampler=optuna.samplers.TPESampler(seed=seed))

    def _propose(self, bracket: int, study: Any) -> list[TrialRecord]:
        s = self.settings
        if s.mode == "grid":
            return [TrialRecord(name=trial_name(a, p), arch=a, precision=p, bracket=0)
                    for a in self._fit_cuts(list(dict.fromkeys(s.candidates))) for p in s.precisions]
        out = []
        for _ in range(min(s.bracket_size, s.trials - bracket * s.bracket_size)):
            trial = study.ask()
            arch, precision = s.search_space.sample(trial)
            out.append(TrialRecord(name=trial_name(arch, precision), arch=arch, precision=precision, bracket=bracket,
                                   optuna_number=trial.number))
        return out

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> list[TrialRecord]:
        state = self._load_state()
        grid = self.settings.mode == "grid"
        records: list[TrialRecord] = []
        seen: dict[str, TrialRecord] = {}  # a re-proposed point shares the work of its first proposal
        for b in range(self.settings.brackets):
            study = None if grid else self._study(b)
            if b < len(state["brackets"]):  # resumed: the same proposals as before the stop
                bracket = [TrialRecord.model_validate(t) for t in state["brackets"][b]]
            elif self._past_deadline():
                self.observer.on_note("time budget (--max-minutes) reached: no new proposals")
                break
            else:
                bracket = self._propose(b, study)
                self._save_bracket(state, b, bracket)
            active = self._screen_bracket(bracket, seen)
            self._save_bracket(state, b, bracket)
            screened = sum(t.status == TrialStatus.SCREENED_OUT for t in bracket)
            self.observer.on_bracket(b, self.settings.brackets, len(bracket), screened, len(active), self.epochs)
            self._halve(active)
            if study is not None:
                self._tell(study, bracket, seen)
            records += bracket
        return records

    def _screen_bracket(self, bracket: list[TrialRecord], seen: dict[str, TrialRecord]) -> list[TrialRecord]:
        """Mark duplicates, screen the rest; the trials that go on to training."""
        for t in bracket:
            if t.name in seen:
                t.set(TrialStatus.DUPLICATE, f"duplicate of {t.name}")
                continue
            seen[t.name] = t
            if t.screen is None:
                t.screen = self.screen(t.arch, t.precision)
                if not t.screen.passed:
                    t.set(TrialStatus.SCREENED_OUT, f"screened out: {t.screen.reason}")
        active = [t for t in bracket if t.status == TrialStatus.PROPOSED]
        return active or self._fastest_when_all_too_slow(bracket)

    def _halve(self, active: list[TrialRecord]) -> None:
        """Successive halving over the rungs: train, evaluate, keep the better 1/eta."""
        for rung in range(len(self.epochs)):
            if not active:
                return
            if self._past_deadline():
                for t in active:
                    t.set(TrialStatus.OUT_OF_TIME, "stopped: time budget" if t.rungs else "not trained: time budget")
                return
            trained = self.train_all(list({t.arch.name: t.arch for t in active}.values()), rung)
            # a lower precision is kept only when faster than FP32: that figure is measured beside it
            wanted = [(t.arch, p) for t in active for p in dict.fromkeys(["fp32", t.precision])
                      if p == t.precision or t.precision != "fp32"]
            results = self.evaluate_many(wanted, rung, trained)
            for t in active:
                t.rungs.append(results[(t.arch.name, t.precision)])
                metric = getattr(getattr(self.trainer, "task", None), "metric", "accuracy")
                self.observer.on_note(result_line(t.name, t.rungs[-1], self.objective.budget_ms, metric))
            if rung < len(self.epochs) - 1:
                keep = set(survivors([(t.name, t.rungs[-1].objective) for t in active], self.settings.eta))
                for t in active:
                    if t.name not in keep:
                        t.set(TrialStatus.STOPPED_AT_RUNG, f"stopped at rung {rung} ({t.rungs[-1].epochs} epochs)")
                active = [t for t in active if t.name in keep]
        for t in active:
            t.set(TrialStatus.FINISHED)

    def _fastest_when_all_too_slow(self, bracket: list[TrialRecord]) -> list[TrialRecord]:
        """When every proposal is over the latency budget, train the fastest ones anyway (a
        selection must exist; the report says none meets the budget). Memory misfits stay out."""
        slow = [t for t in bracket if t.screen is not None and t.screen.reason_kind == "latency"]
        keep = sorted(slow, key=lambda t: t.screen.p90_ms if t.screen else 0.0)
        keep = keep[:max(1, math.ceil(len(slow) / self.settings.eta))]
        for t in keep:
            assert t.screen is not None
            t.set(TrialStatus.PROPOSED)
            t.screen.reason += "; trained anyway: every proposal is over the budget, the fastest are kept"
        return keep

    def _tell(self, study: Any, bracket: list[TrialRecord], seen: dict[str, TrialRecord]) -> None:
        import optuna

        for t in bracket:
            if t.optuna_number is None:
                continue
            if study.trials[t.optuna_number].state != optuna.trial.TrialState.RUNNING:
                continue  # told before the stop
            src = seen[t.name] if t.status == TrialStatus.DUPLICATE else t  # a re-proposal learns the first's outcome
            last = src.last
            if last is None:
                study.tell(t.optuna_number, state=optuna.trial.TrialState.PRUNED)
            elif self.settings.mode == "nsga2":
                study.tell(t.optuna_number, [1 - last.val_accuracy, last.measurement.latency_ms.p90])
            else:
                study.tell(t.optuna_number, last.objective)


def measure_all(measurer: Measurer, jobs: list[tuple[Path, list[int], str]]) -> list[Measurement]:
    """Each job's measurement, in order: together when the measurer takes several at once (a pool
    of boards), else one after another."""
    many = getattr(measurer, "measure_many", None)
    if many is not None and len(jobs) > 1:
        return list(many(jobs))
    return [measurer.measure(*job) for job in jobs]


def _int8_screen_graph(path: Path, shape: list[int]) -> Path:
    """The untrained screening graph quantized to INT8 (QDQ), calibrated on random images:
    latency does not depend on the weights' or the ranges' values, only on the operators."""
    import numpy as np

    from ..convert.qdq import quantize_qdq

    out = path.with_suffix(".int8.onnx")
    if not out.exists():
        rng = np.random.default_rng(0)
        quantize_qdq(path, out, [rng.random(shape, dtype=np.float32) for _ in range(4)])
    return out


def finalize_checkpoint(run_dir: Path, arch: StudentSpec, rung: int) -> Path:
    """The checkpoint of an architecture's last completed rung, as candidates/NAME/student.pt."""
    import shutil

    d = run_dir / "candidates" / arch.name
    dst = d / "student.pt"
    shutil.copyfile(d / f"rung{rung}.pt", dst)
    return dst


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
