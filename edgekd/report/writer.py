"""Write a run's reports atomically (a killed run never leaves half a report)."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write
from .markdown import render_markdown
from .model import Report


def write_reports(run_dir: Path, report: Report) -> None:
    from .html import render_html  # with its plots (matplotlib): imported when a report is written, not at start

    atomic_write(run_dir / "report.json", report.to_json())
    atomic_write(run_dir / "report.md", render_markdown(report))
    atomic_write(run_dir / "report.html", render_html(report, run_dir))
