"""What an `edgekd update` has finished, kept in OUT/update_progress.json so that a killed or
interrupted update continues with `--resume` instead of training again: the options it was
started with (a resume must use the same ones), then each stage as it ends (the teacher of this
step in OUT/teacher.pt, the distilled student in OUT/candidates/ARCH/student.pt)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import atomic_write

PROGRESS = "update_progress.json"

# the options that decide what an update computes: a resume must be started with the same ones
_FLAGS = {"previous": "RUN_DIR", "data": "--data", "teacher": "--teacher", "mu": "--mu", "epochs": "--epochs",
          "teacher_epochs": "--teacher-epochs", "lr": "--lr", "replay_fraction": "--replay-fraction"}
_KEYS = tuple(_FLAGS)


def _args(opts) -> dict[str, Any]:
    def norm(v):
        return str(Path(v).resolve()) if isinstance(v, Path) else v

    return {k: norm(getattr(opts, k)) for k in _KEYS}


def resume_command() -> str:
    """The command line that continues this update: the one typed, with --resume."""
    argv = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    return " ".join(["edgekd", *map(shlex.quote, argv), "--resume"])


class Progress:
    def __init__(self, out: Path, args: dict[str, Any], stages: dict[str, Any] | None = None):
        self.out, self.args, self.stages = out, args, stages or {}

    @classmethod
    def check(cls, opts, finished: str) -> Progress:
        """The progress of this update, checked against --out before anything is written: a new
        one for an empty --out (or with --overwrite); the interrupted one with --resume (same
        options); otherwise a ConfigError that says which of the two to pass."""
        out, args = opts.out, _args(opts)
        held = out.is_dir() and any(p.name != ".lock" for p in out.iterdir())
        if not held or opts.overwrite:
            if opts.resume and not held:
                raise ConfigError(f"--resume: {out} holds no interrupted update; leave out --resume to start one")
            return cls(out, args)
        path = out / PROGRESS
        saved = None
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except ValueError:
                saved = None
        if saved is None:
            raise ConfigError(f"{out} already holds files; pass a new --out folder (or --overwrite)")
        if (out / finished).is_file():
            raise ConfigError(f"{out} holds a finished update ({finished}); pass a new --out folder, or --overwrite "
                              "to do it again")
        if not opts.resume:
            raise ConfigError(f"{out} holds an interrupted update; continue it with --resume (the same options), "
                              "or pass --overwrite to start again")
        differ = [k for k in _KEYS if saved.get("args", {}).get(k) != args[k]]
        if differ:
            k = differ[0]
            raise ConfigError(f"--resume: {out} was started with {_FLAGS[k]} {saved['args'].get(k)}, not {args[k]}; "
                              "resume with the options it was started with, or pass --overwrite to start again")
        return cls(out, args, saved.get("stages", {}))

    def done(self, stage: str) -> dict[str, Any] | None:
        return self.stages.get(stage)

    def save(self, stage: str | None = None, **record: Any) -> None:
        if stage is not None:
            self.stages[stage] = record
        atomic_write(self.out / PROGRESS, json.dumps({"args": self.args, "stages": self.stages}, indent=2))
