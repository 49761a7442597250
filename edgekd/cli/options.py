"""Options more than one command takes, declared once; and `config_option`, which takes the help
text and default of an `optimize` option from RunConfig, where the default lives."""

from __future__ import annotations

from typing import Any

import typer
from pydantic_core import PydanticUndefined

from ..config import PRESETS, RunConfig


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def config_help(field: str) -> str:
    """RunConfig's description of `field`, with its default and the smoke preset's value."""
    info = RunConfig.model_fields[field]
    text = (info.description or field).rstrip(".")
    default = info.default
    shown = not (default is None or default is PydanticUndefined or default is False or default == [])
    if shown and "(default:" not in text:
        text += f" (default: {_show(default)}"
        text += f"; smoke preset: {_show(PRESETS['smoke'][field])})" if field in PRESETS["smoke"] else ")"
    return text + "."


def config_option(field: str, *flags: str, **kw: Any) -> Any:
    """An optional flag for RunConfig.`field`: None when not given, so the file or preset decides.
    A yes/no flag shows no `<bool>` type: it takes no value."""
    if RunConfig.model_fields[field].annotation is bool:
        kw.setdefault("metavar", "")
    return typer.Option(None, *flags, help=config_help(field), show_default=False, **kw)


def threads_option(help: str = "Inference threads. [default: physical cores]") -> Any:
    return typer.Option(None, "--threads", min=1, help=help)


def device_url_option(help: str = "URL of `edgekd agent` on the device (figures: remote).") -> Any:
    return typer.Option(None, "--device-url", help=help)


def token_file_option(help: str = "File with the agent's bearer token (else EDGEKD_AGENT_TOKEN).") -> Any:
    return typer.Option(None, "--device-token-file", help=help)


def quiet_option(help: str = "No progress or tables; errors only.") -> Any:
    return typer.Option(False, "--quiet", "-q", help=help, metavar="")


def split(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']"""
    return [p.strip() for p in text.split(",") if p.strip()]
