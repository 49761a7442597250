"""Candidate training beyond one process: the candidates of a rung are independent, so they are
trained as Ray tasks (`--workers N` on a local Ray instance edgekd starts, or `--ray-address` /
RAY_ADDRESS to join a cluster). A task writes its rung files into the run directory exactly as
the driver would (`rungN.pt`, then `rungN.json`), so `--resume` works whatever died, and the
driver reads them back. Optuna's proposals, screening, measurement and selection stay in the
driver.

What a task reads: the trainer (settings, labels, small tensors) is put once in Ray's object
store; the images and the teacher outputs are memory-mapped files (the image cache and the run
directory's teacher_cache/) that each task reopens by path -- on a cluster those paths must be on
a file system every node mounts (the run directory and EDGEKD_CACHE_DIR on shared storage)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..distill.trainer import Shard
from ..errors import ConfigError, TrainingError
from ..files import atomic_write
from ..models.arch import StudentSpec
from ..models.io import load_checkpoint, save_checkpoint
from .students import StudentTrainer

RAY_EXTRA = "pip install 'edgekd[ray]'"
TASK_RETRIES = 3  # a task whose worker process or node died is run again, up to this many times


@dataclass
class RungUnit:
    """What training one rung of one student needs, picklable: the trainer, where the rung files
    go, the rung epochs and the seeds."""

    trainer: StudentTrainer
    run_dir: Path
    epochs: list[int]
    seed: int
    meta: dict[str, Any]

    def absolute(self) -> RungUnit:
        """The unit with an absolute run directory: Ray workers do not run in the driver's working
        directory, so a relative --out would name another folder there."""
        return dataclasses.replace(self, run_dir=self.run_dir.resolve())

    def folder(self, arch: StudentSpec) -> Path:
        d = self.run_dir / "candidates" / arch.name
        d.mkdir(parents=True, exist_ok=True)
        return d


@dataclass
class Progress:
    """The driver's callbacks while a unit trains in-process (a Ray task reports nothing until done)."""

    note: Callable[[str], None] = lambda text: None
    start: Callable[[str, int, str], None] = lambda label, steps, info: None
    step: Callable[[], None] = lambda: None
    epoch: Callable[[str, int, int, float], None] = lambda label, e, n, loss: None
    end: Callable[[str], None] = lambda label: None
    seconds: Callable[[float], None] = lambda s: None


def train_rung(unit: RungUnit, arch: StudentSpec, rung: int, progress: Progress | None = None,
               shard: Shard | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The architecture trained to `unit.epochs[rung]` epochs (continuing its previous rung), from
    the rung's files when they are complete, else trained and written (checkpoint first, then the
    info file: its presence means the rung is complete). With a `shard` (data-parallel), every
    rank trains its slice and rank 0 alone writes the files."""
    from .engine import seeded, unit_seed

    p = progress or Progress()
    d = unit.folder(arch)
    ckpt, info_file = d / f"rung{rung}.pt", d / f"rung{rung}.json"
    if _complete(unit, arch, rung):
        loaded, _ = load_checkpoint(ckpt)
        return loaded, json.loads(info_file.read_text())
    model: nn.Module
    if rung == 0:
        with seeded(unit_seed(unit.seed, arch.name, "init")):  # the same start, whatever ran before
            model, start = unit.trainer.build(arch)
        p.note(f"student {arch.name}: {start}")
    else:
        model, previous = train_rung(unit, arch, rung - 1, progress, shard)
        start = previous.get("start", "")
    epochs = unit.epochs[rung] - (unit.epochs[rung - 1] if rung else 0)
    label = f"KD {arch.name} r{rung}"
    p.start(label, unit.trainer.steps(epochs), f"{sum(q.numel() for q in model.parameters()):,} params")
    t0 = time.perf_counter()
    with seeded(unit_seed(unit.seed, arch.name, f"rung{rung}")):  # adapters, dropout: this unit's own RNG
        loss = unit.trainer.train(model, epochs, unit.seed + rung, p.step,
                                  lambda e, value: p.epoch(label, e, epochs, value), shard)
    seconds = time.perf_counter() - t0
    p.seconds(seconds)
    p.end(label)
    info = {"epochs": unit.epochs[rung], "train_seconds": round(seconds, 3), "train_loss": loss, "start": start,
            **({"data_parallel": shard.world} if shard is not None else {})}
    if shard is None or shard.rank == 0:
        save_checkpoint(ckpt, model, role="student", metrics=info, **unit.meta)
        atomic_write(info_file, json.dumps(info))
    return model, info


def train_candidate_rung(unit: RungUnit, arch: StudentSpec, rung: int, threads: int) -> dict[str, Any]:
    """One rung of one student in a Ray worker: its files written, its info returned."""
    torch.set_num_threads(threads)
    _, info = train_rung(unit, arch, rung)
    return {**info, "pid": os.getpid(), "node": _node()}


def train_data_parallel_loop(config: dict[str, Any]) -> None:
    """Ray Train's loop on every worker: this rank's shard of one student's rung (rank 0 writes
    the rung files)."""
    import ray.train

    ctx = ray.train.get_context()
    torch.set_num_threads(config["threads"])
    train_rung(config["unit"], config["arch"], config["rung"], shard=Shard(ctx.get_world_rank(),
                                                                           ctx.get_world_size()))


def _node() -> str:
    import socket

    return socket.gethostname()


@dataclass
class RayWorkers:
    """Candidate training as Ray tasks. `workers`: tasks in flight at once (a local Ray instance is
    started with that many task slots of `cpus_per_task` CPUs); `address`: an existing cluster
    (else RAY_ADDRESS, else local). Each task declares `cpus_per_task` CPUs and runs PyTorch with
    as many threads; a task whose worker died is retried by Ray (TASK_RETRIES); an exception in
    the training itself is not retried (it would fail again) and stops the run."""

    workers: int
    address: str | None = None
    cpus_per_task: int = 1
    data_parallel: int = 1  # > 1: each student's rung trained by this many Ray Train workers (DDP-style)
    quiet: bool = False  # --quiet: Ray's own notices (token authentication) held back too
    started_here: bool = False
    nodes: set[str] = field(default_factory=set)
    _remote: Any = field(default=None, repr=False)

    @staticmethod
    def available() -> bool:
        try:
            import ray  # noqa: F401
        except ImportError:
            return False
        return True

    def start(self) -> RayWorkers:
        if not self.available():
            raise ConfigError(f"--workers {self.workers} trains candidates on Ray, which is not installed; "
                              f"run `{RAY_EXTRA}` (or leave out --workers)")
        import ray

        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if self.quiet:  # its token-authentication notice is a warning of its own logger
            logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        if not ray.is_initialized():
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(num_cpus=max(self.workers, self.data_parallel) * self.cpus_per_task, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
                self.started_here = True
        if address and self.workers == 1:  # joined a cluster without --workers: as many tasks as it has room for
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_task)
        self._remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=TASK_RETRIES,
                                  retry_exceptions=False)(train_candidate_rung)
        return self

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address or os.environ.get('RAY_ADDRESS')}" if not self.started_here \
            else "a local Ray instance"
        if self.data_parallel > 1:
            return (f"each student data-parallel on {self.data_parallel} Ray Train workers on {where} (gradients "
                    f"averaged every step), {self.cpus_per_task} CPU(s) and thread(s) each")
        return f"{self.workers} Ray worker(s) on {where}, {self.cpus_per_task} CPU(s) and thread(s) per task"

    def train_data_parallel(self, unit: RungUnit, arch: StudentSpec, rung: int) -> None:
        """One student's rung trained by `data_parallel` Ray Train workers; rank 0 writes the rung
        files (read back by the driver). Storage for Ray Train's own records: the run directory."""
        if _complete(unit, arch, rung):
            return
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        trainer = TorchTrainer(
            train_data_parallel_loop,
            train_loop_config={"unit": unit.absolute(), "arch": arch, "rung": rung, "threads": self.cpus_per_task},
            scaling_config=ScalingConfig(num_workers=self.data_parallel, use_gpu=False,
                                         resources_per_worker={"CPU": self.cpus_per_task}),
            run_config=RunConfig(storage_path=str((unit.run_dir / "ray_train").resolve()),
                                 name=f"{arch.name}-r{rung}"))
        try:
            trainer.fit()
        except Exception as exc:  # Ray Train wraps the workers' errors in its own
            raise TrainingError(f"data-parallel training of {arch.name} (rung {rung}) failed in a worker: "
                                f"{root_cause(exc)}") from None

    def train_many(self, unit: RungUnit, archs: list[StudentSpec], rung: int,
                   note: Callable[[str], None], done: Callable[[], None]) -> dict[str, dict[str, Any]]:
        """Each architecture's rung trained as a task (those whose rung files are complete are
        skipped); at most `workers` tasks in flight; `done()` as each finishes."""
        import ray

        todo = [a for a in archs if not _complete(unit, a, rung)]
        if not todo:
            return {}
        ref_unit = ray.put(unit.absolute())
        pending: dict[Any, StudentSpec] = {}
        out: dict[str, dict[str, Any]] = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < self.workers:
                arch = queue.pop(0)
                pending[self._remote.remote(ref_unit, arch, rung, self.cpus_per_task)] = arch
            ready, _ = ray.wait(list(pending), num_returns=1)
            arch = pending.pop(ready[0])
            try:
                info = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                raise TrainingError(f"training {arch.name} (rung {rung}) failed in a Ray task: "
                                    f"{root_cause(exc)}") from None
            except ray.exceptions.RayError as exc:  # retries spent: the worker or node kept dying
                raise TrainingError(f"training {arch.name} (rung {rung}) was lost {TASK_RETRIES + 1} times "
                                    f"({type(exc).__name__}); check the Ray workers' memory and nodes, then run "
                                    "again with --resume (finished rungs are kept)") from None
            self.nodes.add(info.get("node", "?"))
            out[arch.name] = info
            done()
            note(f"student {arch.name} r{rung}: trained in a Ray task ({info['train_seconds']:.1f} s, "
                 f"pid {info.get('pid')})")
        return out

    def shutdown(self) -> None:
        if self.started_here:
            import ray

            ray.shutdown()
            self.started_here = False


def root_cause(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line` of the innermost error under Ray's wrappers (each wraps the worker's own
    exception as `__cause__`, or as `.cause` for a RayTaskError), not Ray's many-line message."""
    from ..files import first_line

    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return f"{type(exc).__name__}: {first_line(exc, limit)}"


def _complete(unit: RungUnit, arch: StudentSpec, rung: int) -> bool:
    d = unit.run_dir / "candidates" / arch.name
    return (d / f"rung{rung}.pt").exists() and (d / f"rung{rung}.json").exists()
