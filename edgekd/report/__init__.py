"""Reports of a run: the typed `Report` behind report.json, rendered to report.md and a
self-contained report.html. This folder only renders: nothing here measures or trains."""

from .model import Report
from .writer import write_reports

__all__ = ["Report", "write_reports"]
