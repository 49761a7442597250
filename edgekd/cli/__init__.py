"""The `edgekd` command line: one module per command (optimize, profile, export, benchmark,
report, targets, predict, calibrate, agent); shared options in options.py, tables in tables.py."""

from __future__ import annotations

from . import agent, benchmark, calibrate, export, optimize, predict, profile, report, targets, update  # noqa: F401,E402
from .app import app, err_console, user_errors


def main() -> None:
    app(prog_name="edgekd")


__all__ = ["app", "err_console", "main", "user_errors"]
