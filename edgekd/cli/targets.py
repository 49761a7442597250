"""`edgekd targets` (and `targets show NAME`): the device catalogue."""

from __future__ import annotations

import typer
from rich.table import Table

from ..console import make_console
from .app import app, user_errors

targets_app = typer.Typer(help="The target devices: list them, or show one.", invoke_without_command=True,
                          no_args_is_help=False)
app.add_typer(targets_app, name="targets")


@targets_app.callback()
@user_errors
def targets(ctx: typer.Context) -> None:
    """List the known target devices (built-in and from EDGEKD_TARGETS_PATH)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..targets import catalogue

    t = Table(title="targets (add your own: NAME.yaml in a folder listed in EDGEKD_TARGETS_PATH)")
    for col in ("name", "class", "aliases", "runtimes", "budget ms", "power W", "fp32 GFLOP/s", "GB/s", "description"):
        t.add_column(col, no_wrap=col == "name")
    for tg in catalogue().values():
        t.add_row(tg.name, tg.device_class, ", ".join(tg.aliases), ", ".join(tg.runtimes),
                  f"{tg.default_budget_ms:g}", "" if tg.power_w() is None else f"{tg.power_w():g}",
                  f"{tg.peak_gflops['fp32']:g}" if "fp32" in tg.peak_gflops else "detected" if tg.is_local else "",
                  f"{tg.memory_bandwidth_gbps:g}" if tg.memory_bandwidth_gbps else "", tg.description)
    make_console().print(t)


@targets_app.command("show")
@user_errors
def targets_show(name: str = typer.Argument(..., help="Target name or alias.")) -> None:
    """Print one target: class, runtimes, memory, power modes, peak figures and their sources."""
    import yaml

    from ..targets import get_target

    tg = get_target(name)
    data = tg.model_dump(mode="json")
    data["local"] = tg.is_local
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
