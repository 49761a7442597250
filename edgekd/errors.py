"""Errors a user can cause. Each message names the input and the fix; the CLI prints it on one
line and exits with code 2. Anything else is a bug and keeps its traceback."""


class EdgeKDError(Exception):
    """Base class of every user-facing error."""


class ConfigError(EdgeKDError):
    """A flag or configuration value is invalid."""


class TargetError(EdgeKDError):
    """The target device is unknown or its description is invalid."""


class DataError(EdgeKDError):
    """The data set is missing, empty or unreadable."""


class CheckpointError(EdgeKDError):
    """A checkpoint cannot be read or does not fit the data."""


class RunDirError(EdgeKDError):
    """The run directory cannot be used."""


class ProfilingError(EdgeKDError):
    """A model could not be profiled."""


class TrainingError(EdgeKDError):
    """Training diverged (a non-finite loss): the settings, not the code, must change."""


class ExportError(EdgeKDError):
    """A model could not be exported, or its export disagrees with the PyTorch model."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: `detail` says what was kept and the command that continues it."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class ExportFailures(ExportError):
    """Some formats failed while the others were built and checked: `done` holds those results
    (ExportResult records), `failed` the format name and the message of each failure."""

    def __init__(self, failed: list[tuple[str, str]], done: list):
        self.failed, self.done = failed, done
        built = f"; built and checked: {', '.join(r.format for r in done)}" if done else ""
        super().__init__(f"{len(failed)} export format(s) failed: "
                         + " | ".join(f"{name}: {why}" for name, why in failed) + built)
