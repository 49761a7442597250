"""`edgekd update`: incremental distillation of an earlier run's student on new data."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, user_errors
from .options import device_url_option, quiet_option, threads_option, token_file_option


@app.command("update")
@user_errors
def update_cmd(
    run_dir: Path = typer.Argument(..., help="The run to continue: an edgekd optimize run directory (its selected "
                                             "student) or an earlier edgekd update's --out."),
    data: Path = typer.Option(..., "--data", help="Image folder with the new imagery (one folder per class; classes "
                                                  "the earlier run lacks extend the student's head)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the updated run (the earlier run stays as it is)."),
    teacher: Path | None = typer.Option(None, "--teacher", help="A teacher checkpoint trained on every class, old ones "
                                        "first. [default: the earlier run's teacher, its head extended and "
                                        "fine-tuned when classes are added]"),
    mu: float = typer.Option(1.0, "--mu", min=0.0, help="Weight of the history term mu * L_history(S_t, S_t-1): the "
                                                        "previous student's outputs distilled into the updated one. "
                                                        "0 is plain fine-tuning."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Update epochs. [default: the earlier run's "
                                                                     "student epochs]"),
    teacher_epochs: int = typer.Option(3, "--teacher-epochs", min=1, help="Fine-tuning epochs of a teacher whose "
                                                                           "head was extended."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Learning rate. [default: the earlier run's]"),
    replay_fraction: float = typer.Option(1.0, "--replay-fraction", min=0.0, help="Old training images replayed, "
                                          "as a fraction of the new ones (when the earlier data is still "
                                          "reachable)."),
    target: str | None = typer.Option(None, "--target", help="Where the update is measured. [default: the earlier "
                                                             "run's target]"),
    export_formats: str | None = typer.Option(None, "--export-formats", help="Formats of the updated student. "
                                              "[default: the earlier run's, else what the target runs]"),
    threads: int | None = threads_option(),
    device_url: str | None = device_url_option(),
    device_token_file: Path | None = token_file_option(),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Write over an earlier update in --out "
                                   "(finished or not), training again."),
    resume: bool = typer.Option(False, "--resume", metavar="", help="Continue the interrupted update in --out (same "
                                "options): its teacher and distilled student are read back, not trained again."),
    no_cache: bool = typer.Option(False, "--no-cache", metavar="", help="Measure even when the cache holds it."),
    quiet: bool = quiet_option("Errors only."),
) -> None:
    """Continue the selected student of an earlier run on new data, distilled from the teacher and from the
    previous student (so it keeps what it knew); report what was forgotten; measure, export and check it."""
    from ..pipeline.update import UpdateOptions, run_update

    run_update(UpdateOptions(previous=run_dir, data=data, out=out, teacher=teacher, mu=mu, epochs=epochs,
                             teacher_epochs=teacher_epochs, lr=lr, replay_fraction=replay_fraction, target=target,
                             export_formats=export_formats.split(",") if export_formats else None, threads=threads,
                             device_url=device_url, device_token_file=device_token_file, overwrite=overwrite,
                             resume=resume, no_cache=no_cache, quiet=quiet))
