"""Write a run's reports atomically (a killed run never leaves half a report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import render_html
from .markdown import render_markdown


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_reports(run_dir: Path, report: dict[str, Any]) -> None:
    _write(run_dir / "report.json", json.dumps(report, indent=2))
    _write(run_dir / "report.md", render_markdown(report))
    _write(run_dir / "report.html", render_html(report))
