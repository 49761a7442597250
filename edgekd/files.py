"""Two helpers every part uses: write a file so a killed process never leaves half of it, and
the first line of an exception for a one-line error message."""

from __future__ import annotations

import os
from pathlib import Path


def check_writable(path: Path, what: str, folder: bool = False) -> None:
    """Before any work: `path` (a file, or with `folder` a folder) can be written, else one line
    that names the flag. Creates the folder (a file's parent) as writing would."""
    from .errors import EdgeKDError

    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise EdgeKDError(f"{what} {path} is a folder; give a file name")
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".edgekd-write-check.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EdgeKDError(f"{what} {path} cannot be written ({exc.strerror}); choose a writable place") from None


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
