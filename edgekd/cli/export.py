"""`edgekd export`: a checkpoint in deployment formats, each checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import make_console
from .app import app, user_errors
from .options import device_url_option, quiet_option, threads_option, token_file_option


@app.command("export")
@user_errors
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by edgekd (RUN_DIR/candidates/NAME/student.pt, "
                                                "teacher.pt)."),
    formats: str = typer.Option("onnx,openvino", "--formats", "-f",
                                help="Comma-separated: onnx, onnx-int8, openvino, openvino-fp16, openvino-int8, "
                                     "tensorrt-fp16, tensorrt-int8 (TensorRT on the NVIDIA device itself)."),
    out: Path = typer.Option(Path("exports"), "--out", "-o", help="Folder for the exported files and export.json."),
    data: Path | None = typer.Option(None, "--data", help="Image folder for calibration and validation. [default: the "
                                                          "data set the checkpoint names]"),
    calibration_size: int = typer.Option(300, "--calibration-size", min=1, help="INT8 calibration images drawn from "
                                                                                "the training split."),
    max_accuracy_drop: float | None = typer.Option(
        None, "--max-accuracy-drop",
        help="openvino-int8: accuracy-controlled quantization keeping the drop below this (0.01 = 1 point)."),
    threads: int | None = threads_option("Threads for the parity runs. [default: physical cores]"),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace exports already in --out."),
    device_url: str | None = device_url_option(),
    device_token_file: Path | None = token_file_option(),
    device_runtime: str | None = typer.Option(None, "--device-runtime", help="With --device-url: the runtime the "
                                              "device runs the ONNX exports in. [default: the board's first]"),
    quiet: bool = quiet_option("Errors only."),
) -> None:
    """Export a checkpoint to deployment formats; every export is checked against PyTorch on the validation split."""
    from ..data import dataset_from_source
    from ..errors import DataError, ExportError, ExportFailures
    from ..export import FORMATS, parse_formats
    from ..export.run import export_formats, export_metadata
    from ..host import default_threads
    from ..models.io import load_checkpoint

    names = parse_formats(formats)  # an unknown format fails before anything is loaded
    device = _device(device_url, device_token_file, device_runtime)  # reached before any work
    taken = [p.name for p in [out / "export.json", *(out / f"{checkpoint.stem}{FORMATS[f].suffix}" for f in names)]
             if p.exists()]
    if taken and not overwrite:
        raise ExportError(f"{out} already holds {', '.join(taken)}; pass --overwrite to replace them, or another --out")
    model, meta = load_checkpoint(checkpoint)
    if not meta.get("data_source") and data is None:
        raise DataError(f"{checkpoint} does not name its data set (written by an older edgekd); pass --data DIR")
    fallback = {"seed": 0, "val_fraction": 0.2, "image_size": meta["image_size"], "samples_per_class": 0,
                "max_samples_per_class": None}
    ds = dataset_from_source(meta.get("data_source") or fallback, data)
    if ds.classes != meta["classes"]:
        raise DataError(f"the data set has classes {ds.classes}, the checkpoint {meta['classes']}; pass the --data it "
                        "was trained on")
    console = make_console(quiet)
    mean = model.normalize.mean.flatten().tolist()
    std = model.normalize.std.flatten().tolist()

    def done(r) -> None:
        p = r.parity
        console.print(f"{r.format}: {r.path} ({r.size_mb:.3f} MB) {p.agreement_name} {p.top1_agreement:.4f}, "
                      f"{p.metric} {p.accuracy_export:.4f} (PyTorch {p.accuracy_torch:.4f}), "
                      f"max |Δlogit| {r.parity.max_abs_diff:.2e}", highlight=False)

    failure = None
    with console.status(f"exporting {checkpoint.name}: {formats}"):
        try:
            results = export_formats(model, ds, formats, out, checkpoint.stem,
                                     export_metadata(ds, model.name, "export", mean, std),
                                     calibration_size=calibration_size, max_accuracy_drop=max_accuracy_drop,
                                     threads=threads or default_threads(), on_done=done)
        except ExportFailures as exc:  # the formats that passed are kept and recorded; the exit is still 2
            failure, results = exc, exc.done
        if device is not None:
            from ..export.device import check_on_device

            results = check_on_device(device, model, results, ds.x_val, ds.y_val)
            for r in results:
                if r.device_parity is not None:
                    console.print(f"{r.format}: parity {r.device_parity.summary()}", highlight=False)
    if ds.task == "detection":  # the deployable graph: decoding and NMS inside
        _with_nms(model, ds, out, checkpoint.stem, threads or default_threads(), console, "openvino" in names)
    _record(out, checkpoint, ds, results, failure.failed if failure else [])
    if failure is not None:
        raise failure


def _record(out: Path, checkpoint: Path, ds, results: list, failed: list) -> None:  # noqa: ANN001
    """export.json: the checkpoint, its data set, every export with its parity, the failures."""
    import json

    (out / "export.json").write_text(json.dumps({"checkpoint": str(checkpoint), "dataset": ds.summary(),
                                                 "exports": [r.model_dump(mode="json") for r in results],
                                                 "failed": [{"format": f, "error": why} for f, why in failed]},
                                                indent=2))


def _with_nms(model, ds, out: Path, stem: str, threads: int, console, openvino: bool) -> None:  # noqa: ANN001
    """A detector's deployable graph with decoding and NMS inside (and its OpenVINO IR), checked
    against PyTorch."""
    from ..export.detection import CHECKED_IMAGES, deployable, openvino_with_nms

    path, agreement = deployable(model, ds.x_val[:CHECKED_IMAGES], ds.classes, out, stem, {"arch": model.name},
                                 threads)
    console.print(f"onnx with NMS inside: {path} ({agreement.text()})", highlight=False)
    if openvino:
        xml, said = openvino_with_nms(model, path, ds.x_val[:CHECKED_IMAGES], threads)
        console.print(f"openvino with NMS inside: {xml or 'none'} ({said})", highlight=False)


def _device(device_url: str | None, token_file: Path | None, runtime: str | None):
    """The board for parity where the model runs (--device-url), connected; None without one."""
    if device_url is None:
        return None
    from ..agent.client import AgentClient, check_device_url, read_token
    from ..measurers import AgentMeasurer
    from ..profilers import ProfileSettings
    from ..targets import get_target

    url, token = check_device_url(device_url), read_token(token_file)
    board = get_target(AgentClient(url, token).info()["target"]["name"])
    return AgentMeasurer(board, runtime or board.runtimes[0], ProfileSettings(threads=1), url, token).connect()
