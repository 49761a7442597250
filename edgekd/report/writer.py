"""Write a run's reports atomically (a killed run never leaves half a report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .html import render_html
from .markdown import render_markdown


def write_reports(run_dir: Path, report: dict[str, Any]) -> None:
    atomic_write(run_dir / "report.json", json.dumps(report, indent=2))
    atomic_write(run_dir / "report.md", render_markdown(report))
    atomic_write(run_dir / "report.html", render_html(report))
