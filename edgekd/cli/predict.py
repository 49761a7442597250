"""`edgekd predict`: latency, peak memory and energy of a model on a target, from its graph."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..console import make_console
from .app import app, user_errors
from .tables import fmt


@app.command()
@user_errors
def predict(
    model: Path = typer.Argument(..., help="ONNX model."),
    target: str = typer.Option(..., "--target", "-t", help="Target device."),
    runtime: str | None = typer.Option(None, "--runtime", "-r", help="Runtime the prediction is for. [default: the "
                                                                     "target's first]"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8."),
    shape: str | None = typer.Option(None, "--shape", help="Input shape (needed for dynamic axes besides batch)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the prediction as JSON here."),
) -> None:
    """Predict latency, peak memory and energy of a model on a target from its graph."""
    from ..errors import ConfigError
    from ..profilers.inputs import onnx_input_shape, parse_shape
    from ..profilers.predictor import predict_model
    from ..registry import close_matches
    from ..targets import get_target

    tg = get_target(target)
    rt = runtime or tg.runtimes[0]
    if rt not in tg.runtimes:
        raise ConfigError(f"--runtime {rt}: {tg.name} runs {', '.join(tg.runtimes)}; "
                          f"{close_matches(rt, tg.runtimes)}choose one of those")
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"--precision {precision}: {close_matches(precision, ['fp32', 'fp16', 'int8'])}"
                          "choose fp32, fp16 or int8")
    if json_out:
        from ..files import check_writable

        check_writable(json_out, "--json")
    inp_shape = onnx_input_shape(model, parse_shape(shape) if shape else None, 1)
    m = predict_model(model, tg, inp_shape, rt, precision)
    console = make_console()
    t = Table(title=f"{model.name} on {tg.name} ({rt}, {precision}): PREDICTED, not measured")
    for col in ("p50 ms", "peak memory MB", "energy mJ", "power W", "calibration"):
        t.add_column(col)
    power = "-" if m.mean_power_w is None else f"{m.mean_power_w:g}"
    t.add_row(f"{m.latency_ms.p50:.4f}", fmt(m.peak_memory_mb, 1), fmt(m.energy_mj, 4), power,
              escape(m.notes[0].split(";")[0]))
    console.print(t)
    if json_out:
        json_out.write_text(m.model_dump_json(indent=2))
