"""A pool of boards: measurement jobs go to the agents of the run's target, one job per board at
a time. Each board is health-checked (`GET /v1/info`) before every job; a board that cannot be
reached, refuses the token or runs past the time limit leaves the pool and its job goes to
another board; a job the agent answers with an error is tried once more elsewhere (a second
failure is the model's, not the board's). Every measurement records the board that made it,
and the first model measured is also measured on every other board: two boards whose figures
disagree by more than the tolerance are reported (a throttled or misconfigured board)."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..agent.client import AgentError, AgentRefused, AgentUnreachable, read_token
from ..agent.protocol import is_agent_url
from ..errors import ConfigError, ProfilingError
from ..profilers.measurement import Measurement
from ..profilers.settings import ProfileSettings
from ..targets import Target

HEALTH_TIMEOUT_S = 10.0  # a health check's time limit: an agent answers /v1/info at once


class BoardSpec(BaseModel):
    """One board of a `--devices` file."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="the board's agent, http://BOARD:8765")
    token_file: Path | None = Field(default=None, description="its token (else --device-token-file, else "
                                                              "EDGEKD_AGENT_TOKEN)")
    target: str | None = Field(default=None, description="the target it is (else: what its agent says)")
    label: str | None = Field(default=None, description="its name in the records (else its URL)")
    timeout_s: float | None = Field(default=None, gt=0, description="a job's time limit on this board (else "
                                                                    "--device-timeout)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not is_agent_url(v):
            raise ValueError("must be an http(s) URL of `edgekd agent`, e.g. http://BOARD:8765")
        return v.rstrip("/")


def unique_boards(boards: list[BoardSpec]) -> list[BoardSpec]:
    """The boards, each agent once: the same URL twice (with another label, or a trailing slash)
    would send two jobs at a time to one board and count it as two."""
    seen: dict[str, BoardSpec] = {}
    for b in boards:
        key = b.url.rstrip("/").lower()
        if key in seen:
            first = seen[key]
            names = " and ".join(repr(x.label or x.url) for x in (first, b))
            raise ConfigError(f"board {b.url.rstrip('/')} is listed twice ({names}); list each board once (in "
                              "--devices and --device-url together)")
        seen[key] = b
    return boards


def read_devices(path: Path) -> list[BoardSpec]:
    """The boards of a YAML file: `boards:` (or a bare list) of {url, token_file, target, label};
    a relative token_file is relative to the file."""
    fix = "write it as `boards:` followed by entries with url (and optionally token_file, target, label)"
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--devices {path} does not exist; pass a YAML file listing the boards") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--devices {path} cannot be read as YAML ({exc.__class__.__name__}); {fix}") from None
    items = raw.get("boards") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise ConfigError(f"--devices {path} lists no boards; {fix}")
    boards = []
    for i, item in enumerate(items, 1):
        try:
            b = BoardSpec.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "entry"
            raise ConfigError(f"--devices {path}, board {i}: {where}: {err['msg'].removeprefix('Value error, ')}; "
                              f"{fix}") from None
        if b.token_file is not None and not b.token_file.is_absolute():
            b = b.model_copy(update={"token_file": path.parent / b.token_file})
        boards.append(b)
    labels = [b.label or b.url for b in boards]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ConfigError(f"--devices {path} lists {', '.join(twice)} more than once; give each board once")
    return boards


@dataclass
class Board:
    """A board in the pool and what it did."""

    measurer: Any  # AgentMeasurer (imported lazily: measurers imports this module's users)
    state: str = "ready"  # ready | out
    why: str = ""  # why it left the pool
    jobs: int = 0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return str(self.measurer.board)

    def summary(self) -> dict[str, Any]:
        return {"board": self.name, "url": self.measurer.url, "target": self.measurer.board_target or None,
                "state": self.state, "why": self.why or None, "jobs": self.jobs, "seconds": round(self.seconds, 3)}


@dataclass
class BoardPool:
    """Measures ONNX models on every board of `boards` that answers as `target`: a Measurer (figures:
    `remote`) whose `measure_many` keeps every board busy with one job at a time."""

    target: Target
    runtime: str
    settings: ProfileSettings
    boards: list[BoardSpec]
    token_file: Path | None = None  # for boards without their own
    threads: int | None = None
    timeout_s: float = 900.0
    tolerance: float = 0.25  # two boards' p50 of the same model differing by more than this fraction: reported
    mode: Literal["remote"] = "remote"
    notes: list[str] = field(default_factory=list)
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    _pool: list[Board] = field(default_factory=list, repr=False)
    _free: queue.Queue = field(default_factory=queue.Queue, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _checked: bool = field(default=False, repr=False)

    # -- the pool ------------------------------------------------------------------------------
    def connect(self) -> BoardPool:
        """Reach every board (health check), keep those of the run's target; an error naming each
        board and why when none is left."""
        from . import AgentMeasurer

        for spec in self.boards:
            if spec.target is not None and spec.target != self.target.name:
                self.notes.append(f"board {spec.label or spec.url} is a {spec.target}, not a {self.target.name}: "
                                  "not used")
                continue
            try:
                m = AgentMeasurer(self.target, self.runtime, self.settings, spec.url,
                                  read_token(spec.token_file or self.token_file), self.threads, label=spec.label or "",
                                  timeout_s=spec.timeout_s or self.timeout_s, retries=1)
                m.connect(HEALTH_TIMEOUT_S, retries=1)
            except AgentError as exc:
                self._pool.append(Board(_Unreached(spec), state="out", why=str(exc)))
                continue
            if m.board_target != self.target.name:
                self._pool.append(Board(m, state="out", why=f"its agent runs on a {m.board_target}, not a "
                                                            f"{self.target.name}"))
                continue
            self._pool.append(Board(m))
        ready = [b for b in self._pool if b.state == "ready"]
        if not ready:
            raise ProfilingError(f"no board of target {self.target.name} can be reached: "
                                 + "; ".join(f"{b.name}: {b.why}" for b in self._pool)
                                 + "; start `edgekd agent` on them, or fix --device-url / --devices")
        for b in ready:
            self._free.put(b)
        for b in self._pool:
            if b.state == "out":
                self.notes.append(f"board {b.name} left out: {b.why}")
        return self

    @property
    def ready(self) -> list[Board]:
        return [b for b in self._pool if b.state == "ready"]

    @property
    def describe(self) -> str:
        names = ", ".join(b.name for b in self.ready)
        return (f"measured on {len(self.ready)} board(s) of {self.target.name} by their agents ({names}; "
                f"{self.runtime}), one job per board at a time")

    def summary(self) -> list[dict[str, Any]]:
        return [b.summary() for b in self._pool]

    def _drop(self, board: Board, why: str) -> None:
        with self._lock:
            board.state, board.why = "out", why
        self.notes.append(f"board {board.name} taken out of the pool: {why}")

    def _take(self) -> Board:
        """A free board (waiting for one while any is busy); an error when every board is out."""
        while True:
            with self._lock:
                if not any(b.state == "ready" for b in self._pool):
                    raise ProfilingError("every board left the pool: " + "; ".join(
                        f"{b.name}: {b.why}" for b in self._pool) + "; check the boards and run again (--resume "
                        "keeps the work done)")
            try:
                board = self._free.get(timeout=1.0)
            except queue.Empty:
                continue
            if board.state == "ready":
                return board

    # -- jobs ----------------------------------------------------------------------------------
    def _job(self, model_path: Path, shape: list[int], precision: str) -> Measurement:
        """One measurement on the first healthy free board; a board that fails leaves the pool and
        the job goes to another."""
        failed_on: list[str] = []
        while True:
            board = self._take()
            try:
                board.measurer.connect(HEALTH_TIMEOUT_S, retries=0)  # health check before the job
                t0 = time.perf_counter()
                m = board.measurer.measure(model_path, shape, precision)
                with self._lock:
                    board.jobs += 1
                    board.seconds += time.perf_counter() - t0
            except (AgentUnreachable, AgentRefused) as exc:
                self._drop(board, str(exc))
                continue
            except AgentError as exc:  # the agent answered with an error: try the job elsewhere once
                self._free.put(board)
                failed_on.append(f"{board.name}: {exc}")
                if len(failed_on) >= min(2, len(self._pool)):
                    raise ProfilingError(f"{model_path.name} failed on {len(failed_on)} board(s): "
                                         + "; ".join(failed_on)) from None
                continue
            self._free.put(board)
            return m

    def measure(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        if model_path.suffix != ".onnx":
            raise ProfilingError(f"the agents profile ONNX models; {model_path.name} is measured where it was built")
        m = self._job(model_path, shape, precision)
        if not self._checked:
            self._checked = True
            self._cross_check(model_path, shape, precision, m)
        return m

    def measure_many(self, jobs: list[tuple[Path, list[int], str]]) -> list[Measurement]:
        """Every job, in order of `jobs`, spread over the free boards (one job per board at a time)."""
        if not jobs:
            return []
        first = self.measure(*jobs[0])  # the first also cross-checks the boards
        with ThreadPoolExecutor(max_workers=max(1, len(self.ready))) as ex:
            rest = list(ex.map(lambda j: self.measure(*j), jobs[1:]))
        return [first, *rest]

    def _cross_check(self, model_path: Path, shape: list[int], precision: str, first: Measurement) -> None:
        """The first model measured again on every other ready board: p50s beyond the tolerance are
        recorded as disagreements (and said in the report)."""
        for b in list(self.ready):
            if b.name == first.board:
                continue
            try:
                m = b.measurer.measure(model_path, shape, precision)
            except (AgentUnreachable, AgentRefused) as exc:
                self._drop(b, f"failed the cross-check ({exc})")
                continue
            except AgentError as exc:  # answered with an error: the model's, the board stays
                self.notes.append(f"board {b.name} could not run {model_path.name} for the cross-check: {exc}")
                continue
            ratio = m.latency_ms.p50 / first.latency_ms.p50
            row = {"model": model_path.name, "boards": [first.board, m.board], "p50_ms": [first.latency_ms.p50,
                   m.latency_ms.p50], "ratio": round(ratio, 3), "tolerance": self.tolerance}
            if abs(ratio - 1) > self.tolerance:
                self.disagreements.append(row)
                self.notes.append(f"boards {first.board} and {m.board} disagree on {model_path.name}: p50 "
                                  f"{first.latency_ms.p50:.3f} vs {m.latency_ms.p50:.3f} ms (x{ratio:.2f}, "
                                  f"tolerance {self.tolerance:.0%}); a throttled or misconfigured board?")

    def screen(self, model_path: Path, shape: list[int], precision: str = "fp32") -> Measurement:
        from . import PredictedMeasurer

        return PredictedMeasurer(self.target, self.runtime).measure(model_path, shape, precision)

    def parity_board(self) -> Any:
        """The AgentMeasurer of a ready board, for the exports' parity check on the device."""
        return self.ready[0].measurer


@dataclass
class _Unreached:
    """A board that did not answer at connect time (for the records)."""

    spec: BoardSpec
    board_target: str = ""

    @property
    def board(self) -> str:
        return self.spec.label or self.spec.url

    @property
    def url(self) -> str:
        return self.spec.url
