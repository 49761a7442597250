"""The typer application every command registers on, and the one way user errors leave it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import EdgeKDError
from ..interrupts import guard_interrupts

app = typer.Typer(
    help="Hardware-aware knowledge distillation and edge deployment: distil a teacher into "
         "students, measure them on the target device, export and verify the best one.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """EdgeKDError -> one line on stderr and exit code 2; so is an OSError on a path the user
    gave (a read-only --out, a folder where a file goes). Bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard_interrupts()
        try:
            return fn(*args, **kwargs)
        except EdgeKDError as exc:
            _one_line(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            _one_line(f"{exc.filename}: {exc.strerror or type(exc).__name__}; check the path (a writable folder "
                      "for outputs, a readable file for inputs) and try again")
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            err_console.print(getattr(exc, "detail", None) or "interrupted", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper


def _one_line(message: str) -> None:
    text = " ".join(message.split())  # one line, whatever the message held
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass
