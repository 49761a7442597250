"""`edgekd benchmark`: every export of a run (or one model) on every named target and runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import make_console
from .app import app, user_errors
from .options import device_url_option, split, threads_option, token_file_option
from .tables import benchmark_table


@app.command("benchmark")
@user_errors
def benchmark_cmd(
    source: Path = typer.Argument(..., help="A run directory (every export in it) or one ONNX model."),
    targets: str = typer.Option("cpu", "--targets", help="Comma-separated targets, e.g. cpu,jetson-orin-nano."),
    runtimes: str | None = typer.Option(None, "--runtimes", help="Runtimes for ONNX files (others use their format's "
                                                                 "runtime)."),
    runs: int = typer.Option(100, "--runs", min=1, help="Minimum timed runs."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", min=0, help="Minimum timed duration, s."),
    threads: int | None = threads_option(),
    device_url: str | None = device_url_option(),
    device_token_file: Path | None = token_file_option(),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for benchmark.json and benchmark.md. [default: "
                                                              "the run directory, or next to the model]"),
) -> None:
    """Benchmark every export of a run (or one model) on every named target and runtime."""
    import json

    from ..benchmark import benchmark, render_markdown
    from ..files import check_writable
    from ..host import default_threads
    from ..profilers import ProfileSettings

    folder = out or (source if source.is_dir() else source.parent)
    check_writable(folder, "--out", folder=True)  # before the work, not after it
    if device_url is not None:  # a bad URL or token is the user's to fix, not an "unavailable" row
        from ..agent.client import check_device_url, read_token

        check_device_url(device_url)
        read_token(device_token_file)
    settings = ProfileSettings(threads=threads or default_threads(), min_runs=runs, min_seconds=min_seconds)
    rows = benchmark(source, split(targets), split(runtimes) if runtimes else None, settings, device_url,
                     device_token_file)
    (folder / "benchmark.json").write_text(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
    md = render_markdown(rows)
    (folder / "benchmark.md").write_text(md)
    console = make_console()
    console.print(benchmark_table(rows))
    console.print(f"wrote {folder / 'benchmark.json'} and {folder / 'benchmark.md'}")
