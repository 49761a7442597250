"""The `edgekd` command line."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import EdgeKDError

app = typer.Typer(
    help="Hardware-aware knowledge distillation and edge deployment: distil a teacher into "
         "students, measure them on the target device, export and verify the best one.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """EdgeKDError -> one line on stderr and exit code 2 (bugs keep their traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeKDError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


@app.command()
@user_errors
def optimize(
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target device name or alias (see `edgekd targets`). [default: cpu]"),
    data: Optional[Path] = typer.Option(None, "--data", help="Image-folder data set (one sub-folder per class). [default: the built-in synthetic demo set]"),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint written by edgekd; without it a teacher is trained first."),
    budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="Real-time budget t_real-time for the p90 latency, ms. [default: the target's, 33.3 for cpu]"),
    lambda_: Optional[float] = typer.Option(None, "--lambda", help="Weight λ of the hardware cost C_hw in J. [default: 0.5]"),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Real-time penalty γ added when p90 > budget. [default: 10]"),
    delta: Optional[float] = typer.Option(None, "--delta", help="Weight δ of energy per inference (per mJ) in J. [default: 0]"),
    preset: Optional[str] = typer.Option(None, "--preset", help="smoke (about a minute: tiny data, 3 candidates, 1 epoch) or default."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory. [default: runs/TARGET-TIMESTAMP]"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Write into a run directory that already holds files."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of data generation, splits and training. [default: 0]"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads for profiling. [default: physical cores]"),
    teacher_epochs: Optional[int] = typer.Option(None, "--teacher-epochs", help="Epochs to train the teacher."),
    student_epochs: Optional[int] = typer.Option(None, "--student-epochs", help="KD epochs per candidate student."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input resolution. [default: 32 demo, 64 image folders]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with the same keys as these flags (budget_ms, lambda, ...); flags win."),
    quiet: Optional[bool] = typer.Option(None, "--quiet", "-q", help="No progress bars or tables; errors only."),
) -> None:
    """Distil, measure, select, export and report: the whole loop for one target."""
    from .config import build_config
    from .pipeline import run_optimize

    flags = dict(target=target, data=data, teacher=teacher, budget_ms=budget_ms, gamma=gamma, delta=delta,
                 preset=preset, out=out, overwrite=overwrite, seed=seed, threads=threads,
                 teacher_epochs=teacher_epochs, student_epochs=student_epochs, image_size=image_size, quiet=quiet)
    flags["lambda"] = lambda_
    cfg = build_config(flags, config)
    run_optimize(cfg)


@app.command()
@user_errors
def targets() -> None:
    """List the known target devices."""
    from .targets import catalogue

    t = Table(title="targets")
    for col in ("name", "class", "aliases", "runtimes", "budget ms", "power W", "description"):
        t.add_column(col)
    for tg in catalogue().values():
        t.add_row(tg.name, tg.device_class, ", ".join(tg.aliases), ", ".join(tg.runtimes),
                  f"{tg.default_budget_ms:g}", "" if tg.power_w() is None else f"{tg.power_w():g}", tg.description)
    Console().print(t)


def main() -> None:
    app(prog_name="edgekd")


if __name__ == "__main__":
    sys.exit(main())
