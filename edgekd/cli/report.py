"""`edgekd report`: report.md and report.html again from a run's report.json."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import make_console
from ..errors import EdgeKDError
from .app import app, user_errors


@app.command()
@user_errors
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `edgekd optimize`.")) -> None:
    """Regenerate report.md and report.html from RUN_DIR/report.json."""
    import json

    from pydantic import ValidationError

    from ..report import Report, write_reports
    from ..report.model import SCHEMA_VERSION

    path = run_dir / "report.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeKDError(f"{path} does not exist; pass the run directory of an edgekd optimize run") from None
    except json.JSONDecodeError as exc:
        raise EdgeKDError(f"{path} is not valid JSON (line {exc.lineno}); it was edited or cut short") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise EdgeKDError(f"{path} has schema_version {data.get('schema_version')!r}; this edgekd reads version "
                          f"{SCHEMA_VERSION} (re-run the optimize that wrote it with this edgekd)")
    try:
        report = Report.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise EdgeKDError(f"{path} does not match the report schema at {where}: {err['msg']}; "
                          "it was edited or written by another edgekd version") from None
    write_reports(run_dir, report)
    make_console().print(f"wrote {run_dir / 'report.md'} and {run_dir / 'report.html'}")
