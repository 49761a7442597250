"""Ctrl-C that is not lost. Python raises KeyboardInterrupt wherever the main thread is when the
signal arrives; inside a finaliser (a `__del__`, e.g. a DataLoader iterator shutting its worker
processes down at the end of an epoch) the exception is printed and dropped, and the run would go
on. `guard_interrupts` (installed by the CLI) remembers every Ctrl-C; long loops call
`check_interrupted` at safe points, which raises it again if it was dropped."""

from __future__ import annotations

import signal
import threading
from types import FrameType

_pending = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def guard_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt as before and is remembered (main thread, Python's default
    handler only: a program that set its own keeps it, and a process started with SIGINT ignored,
    e.g. in the background with nohup, keeps ignoring it)."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (its first raise may have been dropped)."""
    if _pending:
        raise KeyboardInterrupt
