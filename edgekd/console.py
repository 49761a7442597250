"""The rich console every command prints through, and the progress of a run on it."""

from __future__ import annotations

import time

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def make_console(quiet: bool = False) -> Console:
    console = Console(quiet=quiet)
    if not console.is_terminal:
        console.width = max(console.width, 140)  # logs and pipes: keep tables readable
    return console


class ConsoleObserver:
    """A run's progress on a rich console. On a terminal: progress bars and messages. Elsewhere
    (a log file, CI, a pipe, nohup): every message with a timestamp, and one plain line per
    epoch in place of the bars, so a log shows steady progress. Nothing at all when quiet.
    Implements the search's `SearchObserver`."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or make_console(quiet)
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
            console=self.console, disable=quiet or not self.console.is_terminal, transient=False)
        self._task: TaskID | None = None
        self.plain = not quiet and not self.console.is_terminal  # lines instead of bars

    def __enter__(self) -> ConsoleObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def say(self, text: str, style: str | None = None) -> None:
        if not self.quiet:
            self.console.print(f"{time.strftime('%H:%M:%S')} {text}" if self.plain else text, style=style)

    def show(self, renderable: RenderableType) -> None:
        if not self.quiet:
            self.console.print(renderable)

    def on_note(self, text: str) -> None:
        self.say(text)

    def on_bracket(self, index: int, total: int, proposals: int, screened_out: int, trained: int,
                   rung_epochs: list[int]) -> None:
        self.say(f"bracket {index + 1}/{total}: {proposals} proposals, {screened_out} screened out, "
                 f"{trained} trained (rungs at {rung_epochs} epochs)")

    def on_rung_start(self, label: str, steps: int, info: str) -> None:
        self._task = self.progress.add_task(label, total=steps, info=info)
        if self.plain and label.startswith("KD "):
            self.say(f"{label}: training ({info}, {steps} steps)")

    def on_step(self) -> None:
        if self._task is not None:
            self.progress.advance(self._task)

    def on_epoch(self, label: str, epoch: int, epochs: int, loss: float) -> None:
        if self.plain:
            self.say(f"{label}: epoch {epoch}/{epochs}, loss {loss:.4f}")

    def on_rung_end(self, label: str) -> None:
        if self._task is not None and label.startswith("KD "):
            self.progress.update(self._task, visible=False)
        self._task = None
