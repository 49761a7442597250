"""`edgekd calibrate`: fit the device model to real measurements on the target."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import make_console
from ..errors import EdgeKDError
from .app import app, user_errors
from .options import device_url_option, threads_option, token_file_option


@app.command()
@user_errors
def calibrate(
    target: str = typer.Option(..., "--target", "-t", help="Target to calibrate."),
    runtime: str | None = typer.Option(None, "--runtime", "-r", help="Runtime to measure with. [default: the target's "
                                                                     "first]"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8."),
    device_url: str | None = device_url_option("Agent on the device (needed for targets other than this host)."),
    device_token_file: Path | None = token_file_option(),
    threads: int | None = threads_option(),
    min_seconds: float = typer.Option(1.0, "--min-seconds", min=0, help="Minimum timed duration per model, s "
                                      "(as edgekd profile: a shorter window measures a different regime)."),
) -> None:
    """Fit the device model to real measurements of the calibration models on the target (EdgeNets, timm
    students and segmenters at several sizes: a few minutes) and say its in-sample and cross-validated error."""
    from ..host import default_threads
    from ..measurers import measurer_for
    from ..profilers import ProfileSettings
    from ..profilers.predictor.calibrate import calibrate as run_calibration
    from ..profilers.predictor.calibrate import calibration_set
    from ..profilers.predictor.calibration import calibration_dir
    from ..targets import get_target

    tg = get_target(target)
    rt = runtime or tg.runtimes[0]
    settings = ProfileSettings(threads=threads or default_threads(), min_seconds=min_seconds, precision=precision,
                               energy_meter="none")
    measurer = measurer_for(tg, settings, None, device_url, device_token_file, runtime=rt, device_threads=threads)
    if measurer.mode == "predicted":
        raise EdgeKDError(f"target {tg.name} is not this machine: pass --device-url of the edgekd agent running on it")
    measure = lambda path, shape: measurer.measure(path, shape, precision)  # noqa: E731
    console = make_console()
    n = len(calibration_set())
    with console.status(f"calibrating {tg.name}/{rt}/{precision} on {n} models") as status:
        done = [0]

        def tick(name: str) -> None:
            done[0] += 1
            status.update(f"calibrating {tg.name}/{rt}/{precision}: {done[0]}/{n} ({name})")

        cal = run_calibration(tg, rt, precision, measure, on_model=tick)
    console.print(f"{cal.describe()}; stored in {calibration_dir()} and used by predictions from now on")
