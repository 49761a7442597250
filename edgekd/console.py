"""The rich console every command prints through."""

from __future__ import annotations

from rich.console import Console


def make_console(quiet: bool = False) -> Console:
    console = Console(quiet=quiet)
    if not console.is_terminal:
        console.width = max(console.width, 140)  # logs and pipes: keep tables readable
    return console
