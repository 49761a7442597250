"""Two helpers every part uses: write a file so a killed process never leaves half of it, and
the first line of an exception for a one-line error message."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename:
    readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)
    return path


def first_line(exc: BaseException | str, limit: int = 200, default: str | None = None) -> str:
    """The first non-empty line of an exception's message (or of a text), cut to `limit`
    characters; the exception's class name (or `default`) when the message is empty."""
    text = exc if isinstance(exc, str) else str(exc)
    lines = text.strip().splitlines()
    if not lines:
        return default or (type(exc).__name__ if not isinstance(exc, str) else "no output")
    return lines[0][:limit]
