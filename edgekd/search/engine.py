"""The hardware-aware search (DESIGN.md section 2): proposals -> cheap screen (predicted or
quickly measured latency, memory fit) -> KD training by successive halving, re-profiled and
scored by J after every rung. Every unit of work is a file in the run directory, so a killed
run resumes where it stopped and nothing finished is recomputed."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel

from ..files import atomic_write
from ..config import RunConfig
from ..models.arch import ArchSpec
from ..data import Dataset
from ..distill.losses import KDSettings
from ..distill.teacher import TeacherSource
from ..distill.trainer import Unlabeled, evaluate, predict_logits, steps, train
from ..convert.onnx import to_onnx
from ..convert.qdq import calibration_batches, quantize_qdq
from ..models.family import build_model
from ..models.io import load_checkpoint, save_checkpoint
from ..models.stats import count_macs, count_params
from ..profilers.measurement import Measurement
from ..measurers import Measurer
from ..targets import Target
from .objective import Costs, CostWeights, HardwareCost, hardware_cost, objective, realtime_penalty


class Screen(BaseModel):
    passed: bool
    reason: str
    signal: str  # how latency was estimated: "measured (quick)", "predicted (calibrated)", ...
    p90_ms: float
    peak_memory_mb: float | None


class RungResult(BaseModel):
    rung: int
    epochs: int
    train_seconds: float  # this rung's training of the architecture
    train_loss: list[float] = []  # per epoch of this rung
    val_accuracy: float
    val_kd_loss: float
    val_cross_entropy: float
    onnx: str
    measurement: Measurement
    hardware_cost: HardwareCost
    penalty: float
    meets_budget: bool
    fits_memory: bool
    objective: float


class TrialRecord(BaseModel):
    name: str
    arch: ArchSpec
    precision: str
    bracket: int
    optuna_number: int | None = None
    screen: Screen | None = None
    rungs: list[RungResult] = []
    status: str = "proposed"  # screened out / stopped at rung N / stopped: time budget / finished

    @property
    def last(self) -> RungResult | None:
        return self.rungs[-1] if self.rungs else None


@dataclass
class SearchContext:
    cfg: RunConfig
    ds: Dataset
    mean: list[float]
    std: list[float]
    teacher: TeacherSource
    teacher_channels: list[int]
    t_val: torch.Tensor
    terms: list[tuple[str, float]]
    kd: KDSettings
    unlabeled: Unlabeled | None
    measurer: Measurer
    shape: list[int]
    target: Target
    budget_ms: float
    reference: Costs
    run_dir: Path
    ckpt_meta: dict
    threads: int
    say: Callable[..., None]
    progress: Any
    deadline: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def rung_epochs(total: int, rungs: int, eta: int) -> list[int]:
    """Cumulative epochs at each rung: total / eta^(rungs-1), ..., total / eta, total."""
    return sorted({max(1, math.ceil(total / eta ** (rungs - 1 - r))) for r in range(rungs)})


def survivors(results: list[tuple[str, float]], eta: int) -> list[str]:
    """The best ceil(n / eta) names by objective (lower is better)."""
    keep = math.ceil(len(results) / eta)
    return [name for name, _ in sorted(results, key=lambda r: r[1])[:keep]]


class Search:
    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        self.state_file = ctx.run_dir / "search.json"
        self.weights = CostWeights(ctx.cfg.w_latency, ctx.cfg.w_memory, ctx.cfg.w_energy)
        cfg = ctx.cfg
        self.epochs = [cfg.student_epochs] if cfg.search == "grid" else rung_epochs(cfg.student_epochs, cfg.rungs, cfg.eta)
        self._calib: list | None = None

    # -- files ---------------------------------------------------------------------------------
    def _dir(self, arch: ArchSpec) -> Path:
        d = self.ctx.run_dir / "candidates" / arch.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _time(self, stage: str, t0: float) -> None:
        self.ctx.seconds[stage] = round(self.ctx.seconds.get(stage, 0.0) + time.perf_counter() - t0, 3)

    def _past_deadline(self) -> bool:
        return self.ctx.deadline is not None and time.perf_counter() > self.ctx.deadline

    # -- units of work -------------------------------------------------------------------------
    def train_rung(self, arch: ArchSpec, rung: int) -> tuple[torch.nn.Module, dict]:
        """The architecture trained to `self.epochs[rung]` epochs (continuing its previous rung)."""
        c = self.ctx
        d = self._dir(arch)
        ckpt, info_file = d / f"rung{rung}.pt", d / f"rung{rung}.json"
        if ckpt.exists() and info_file.exists():
            model, _ = load_checkpoint(ckpt)
            return model, json.loads(info_file.read_text())
        if rung == 0:
            model = build_model(arch, c.ds.in_channels, len(c.ds.classes), c.mean, c.std)
        else:
            model, _ = self.train_rung(arch, rung - 1)
        epochs = self.epochs[rung] - (self.epochs[rung - 1] if rung else 0)
        task = c.progress.add_task(f"KD {arch.name} r{rung}", total=steps(len(c.ds.y_train), c.cfg.batch_size, epochs),
                                   info=f"{count_params(model):,} params")
        t0 = time.perf_counter()
        hist = train(model, c.ds.x_train, c.ds.y_train, epochs=epochs, batch_size=c.cfg.batch_size,
                     lr=c.cfg.lr, seed=c.cfg.seed + rung, teacher=c.teacher, terms=c.terms, kd=c.kd,
                     teacher_channels=c.teacher_channels, pairs=c.cfg.feature_pairs, unlabeled=c.unlabeled,
                     on_step=lambda: c.progress.advance(task))
        self._time("kd_training", t0)
        c.progress.update(task, visible=False)
        info = {"epochs": self.epochs[rung], "train_seconds": round(sum(hist.epoch_seconds), 3),
                "train_loss": hist.epoch_loss}
        save_checkpoint(ckpt, model, role="student", metrics=info, **c.ckpt_meta)
        info_file.write_text(json.dumps(info))  # written last: its presence means the rung is complete
        return model, info

    def evaluate_rung(self, arch: ArchSpec, precision: str, rung: int, model: torch.nn.Module,
                      info: dict) -> RungResult:
        c = self.ctx
        d = self._dir(arch)
        out = d / f"rung{rung}-{precision}.json"
        if out.exists():
            return RungResult.model_validate_json(out.read_text())
        t0 = time.perf_counter()
        onnx_path = d / f"rung{rung}.onnx"
        if not onnx_path.exists():
            to_onnx(model, onnx_path, c.shape)
        if precision == "int8":
            onnx_path = quantize_qdq(onnx_path, d / f"rung{rung}.int8.onnx", self._calibration(),
                                     symmetric=c.measurer.runtime == "tensorrt")
            from ..profilers.runner import onnx_logits

            logits = onnx_logits(onnx_path, c.ds.x_val, c.threads)
        else:
            logits = predict_logits(model, c.ds.x_val)
        ev = evaluate(logits, c.ds.y_val, c.t_val, c.kd.alpha, c.kd.temperature)
        m = c.measurer.measure(onnx_path, c.shape, precision)
        hw = hardware_cost(Costs(m.latency_ms.p50, m.peak_memory_mb, m.energy_mj), c.reference, self.weights)
        pen = realtime_penalty(m.latency_ms.p90, c.budget_ms, c.cfg.gamma)
        res = RungResult(
            rung=rung, epochs=info["epochs"], train_seconds=info["train_seconds"], train_loss=info["train_loss"],
            val_accuracy=ev["accuracy"],
            val_kd_loss=ev["kd_loss"], val_cross_entropy=ev["cross_entropy"], onnx=str(onnx_path), measurement=m,
            hardware_cost=hw, penalty=pen, meets_budget=m.latency_ms.p90 <= c.budget_ms,
            fits_memory=m.peak_memory_mb is None or c.target.memory_budget_mb is None
            or m.peak_memory_mb <= c.target.memory_budget_mb,
            objective=objective(ev["kd_loss"], hw.c_hw, pen, m.energy_mj, c.cfg.lambda_, c.cfg.delta))
        out.write_text(res.model_dump_json())
        self._time("profiling", t0)
        return res

    def _calibration(self) -> list:
        if self._calib is None:
            from ..export.run import calibration_subset

            c = self.ctx
            self._calib = calibration_batches(calibration_subset(c.ds, c.cfg.calibration_size, c.cfg.seed),
                                              [1, *c.shape[1:]])
        return self._calib

    def screen(self, arch: ArchSpec, precision: str) -> Screen:
        """Drop a proposal before any training when its latency (untrained weights: latency does
        not depend on their values) is far over the budget, or its memory cannot fit."""
        c = self.ctx
        if not c.cfg.screen:
            return Screen(passed=True, reason="screening off", signal="none", p90_ms=0.0, peak_memory_mb=None)
        t0 = time.perf_counter()
        d = self._dir(arch)
        path = d / "screen.onnx"
        if not path.exists():
            to_onnx(build_model(arch, c.ds.in_channels, len(c.ds.classes)), path, c.shape)
        m = c.measurer.screen(path, c.shape, precision)
        self._time("screening", t0)
        limit = c.budget_ms * c.cfg.screen_slack
        signal = f"{m.source['latency']} ({m.runtime})"
        if m.latency_ms.p90 > limit:
            return Screen(passed=False, signal=signal, p90_ms=m.latency_ms.p90, peak_memory_mb=m.peak_memory_mb,
                          reason=f"p90 {m.latency_ms.p90:.3f} ms > {c.cfg.screen_slack:g} x budget ({limit:g} ms)")
        mem_budget = c.target.memory_budget_mb
        if m.peak_memory_mb is not None and mem_budget is not None and m.peak_memory_mb > mem_budget:
            return Screen(passed=False, signal=signal, p90_ms=m.latency_ms.p90, peak_memory_mb=m.peak_memory_mb,
                          reason=f"peak memory {m.peak_memory_mb:.0f} MB > budget {mem_budget:g} MB")
        return Screen(passed=True, reason="within budget", signal=signal, p90_ms=m.latency_ms.p90,
                      peak_memory_mb=m.peak_memory_mb)

    # -- proposals -----------------------------------------------------------------------------
    def _load_state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {"brackets": []}

    def _save_state(self, state: dict) -> None:
        atomic_write(self.state_file, json.dumps(state, indent=1))

    def _study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        cfg = self.ctx.cfg
        storage = f"sqlite:///{self.ctx.run_dir / 'optuna.db'}"
        if cfg.search == "nsga2":
            return optuna.create_study(study_name="edgekd", storage=storage, load_if_exists=True,
                                       directions=["minimize", "minimize"],
                                       sampler=optuna.samplers.NSGAIISampler(seed=cfg.seed))
        return optuna.create_study(study_name="edgekd", storage=storage, load_if_exists=True, direction="minimize",
                                   sampler=optuna.samplers.TPESampler(seed=cfg.seed))

    def _propose(self, bracket: int, study) -> list[TrialRecord]:
        cfg = self.ctx.cfg
        if cfg.search == "grid":
            return [TrialRecord(name=a.name + ("" if p == "fp32" else f"@{p}"), arch=a, precision=p, bracket=0)
                    for a in dict.fromkeys(cfg.candidates) for p in cfg.precisions]
        n = min(cfg.bracket_size, cfg.trials - bracket * cfg.bracket_size)
        out = []
        for _ in range(n):
            trial = study.ask()
            arch, precision = cfg.search_space.sample(trial)
            out.append(TrialRecord(name=arch.name + ("" if precision == "fp32" else f"@{precision}"), arch=arch,
                                   precision=precision, bracket=bracket, optuna_number=trial.number))
        return out

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> list[TrialRecord]:
        cfg, c = self.ctx.cfg, self.ctx
        state = self._load_state()
        study = None if cfg.search == "grid" else self._study()
        n_brackets = 1 if cfg.search == "grid" else math.ceil(cfg.trials / cfg.bracket_size)
        records: list[TrialRecord] = []
        seen: dict[str, TrialRecord] = {}  # a re-proposed point shares the work of its first proposal
        for b in range(n_brackets):
            if b < len(state["brackets"]):  # resumed: the same proposals as before the stop
                bracket = [TrialRecord.model_validate(t) for t in state["brackets"][b]]
            else:
                if self._past_deadline():
                    c.say("time budget (--max-minutes) reached: no new proposals")
                    break
                bracket = self._propose(b, study)
                state["brackets"].append([t.model_dump(mode="json") for t in bracket])
                self._save_state(state)
            for t in bracket:
                if t.name in seen:
                    t.status = f"duplicate of {t.name}"
                    continue
                seen[t.name] = t
                if t.screen is None:
                    t.screen = self.screen(t.arch, t.precision)
                    if not t.screen.passed:
                        t.status = f"screened out: {t.screen.reason}"
            state["brackets"][b] = [t.model_dump(mode="json") for t in bracket]
            self._save_state(state)
            active = [t for t in bracket if t.status == "proposed"]
            if not active:
                active = self._fastest_when_all_too_slow(bracket)
                state["brackets"][b] = [t.model_dump(mode="json") for t in bracket]
                self._save_state(state)
            screened = sum(1 for t in bracket if t.status.startswith("screened out"))
            c.say(f"bracket {b + 1}/{n_brackets}: {len(bracket)} proposals, {screened} screened out, "
                  f"{len(active)} trained (rungs at {self.epochs} epochs)")
            for rung in range(len(self.epochs)):
                if not active:
                    break
                if self._past_deadline():
                    for t in active:
                        t.status = "stopped: time budget" if t.rungs else "not trained: time budget"
                    active = []
                    break
                trained: dict[str, tuple] = {}
                for t in active:
                    if t.arch.name not in trained:
                        trained[t.arch.name] = self.train_rung(t.arch, rung)
                    model, info = trained[t.arch.name]
                    t.rungs.append(self.evaluate_rung(t.arch, t.precision, rung, model, info))
                if rung < len(self.epochs) - 1:
                    keep = set(survivors([(t.name, t.last.objective) for t in active], cfg.eta))
                    for t in active:
                        if t.name not in keep:
                            t.status = f"stopped at rung {rung} ({t.last.epochs} epochs)"
                    active = [t for t in active if t.name in keep]
            for t in active:
                t.status = "finished"
            if study is not None:
                self._tell(study, bracket, seen)
            records += bracket
        return records

    def _fastest_when_all_too_slow(self, bracket: list[TrialRecord]) -> list[TrialRecord]:
        """When every proposal is over the latency budget, train the fastest ones anyway (a
        selection must exist; the report says none meets the budget). Memory misfits stay out."""
        slow = [t for t in bracket if t.screen is not None and not t.screen.passed and "p90" in t.screen.reason]
        keep = sorted(slow, key=lambda t: t.screen.p90_ms)[:max(1, math.ceil(len(slow) / self.ctx.cfg.eta))]
        for t in keep:
            t.status = "proposed"
            t.screen.reason += "; trained anyway: every proposal is over the budget, the fastest are kept"
        return keep

    def _tell(self, study, bracket: list[TrialRecord], seen: dict[str, TrialRecord]) -> None:
        import optuna

        for t in bracket:
            if t.optuna_number is None:
                continue
            frozen = study.trials[t.optuna_number]
            if frozen.state != optuna.trial.TrialState.RUNNING:
                continue  # told before the stop
            number = t.optuna_number
            src = seen[t.name] if t.status.startswith("duplicate") else t  # a re-proposal learns the first's outcome
            if src.last is None:
                study.tell(number, state=optuna.trial.TrialState.PRUNED)
            elif self.ctx.cfg.search == "nsga2":
                study.tell(number, [1 - src.last.val_accuracy, src.last.measurement.latency_ms.p90])
            else:
                study.tell(number, src.last.objective)


def finalize_checkpoint(run_dir: Path, arch: ArchSpec, rung: int) -> Path:
    """The checkpoint of an architecture's last completed rung, as candidates/NAME/student.pt."""
    import shutil

    d = run_dir / "candidates" / arch.name
    dst = d / "student.pt"
    shutil.copyfile(d / f"rung{rung}.pt", dst)
    return dst


def macs_params(arch: ArchSpec, ds: Dataset, shape: list[int]) -> tuple[int, int]:
    m = build_model(arch, ds.in_channels, len(ds.classes))
    return count_params(m), count_macs(m, tuple(shape))
