"""Reports of a run: report.json (the machine-readable source) and report.md (tables)."""

from .writer import write_reports

__all__ = ["write_reports"]
