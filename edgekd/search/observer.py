"""How the search reports progress without knowing who listens: the CLI implements this with
rich progress bars, tests with a list, quiet runs with nothing."""

from __future__ import annotations

from typing import Protocol


class SearchObserver(Protocol):
    """Called by the search on its own thread, in order; implementations must not raise."""

    def on_note(self, text: str) -> None:
        """A one-line message for the person watching (e.g. the time budget ran out)."""

    def on_bracket(self, index: int, total: int, proposals: int, screened_out: int, trained: int,
                   rung_epochs: list[int]) -> None:
        """A bracket was proposed and screened; `trained` of its proposals go on to training."""

    def on_rung_start(self, label: str, steps: int, info: str) -> None:
        """Training of one rung of one architecture starts; `steps` optimiser steps follow."""

    def on_step(self) -> None:
        """One optimiser step of the running rung is done."""

    def on_epoch(self, label: str, epoch: int, epochs: int, loss: float) -> None:
        """Epoch `epoch` of `epochs` of the running rung (or the teacher) is done; `loss` its mean."""

    def on_rung_end(self, label: str) -> None:
        """The running rung's training is done."""


class SilentObserver:
    """Hears everything, says nothing."""

    def on_note(self, text: str) -> None:
        pass

    def on_bracket(self, index: int, total: int, proposals: int, screened_out: int, trained: int,
                   rung_epochs: list[int]) -> None:
        pass

    def on_rung_start(self, label: str, steps: int, info: str) -> None:
        pass

    def on_step(self) -> None:
        pass

    def on_epoch(self, label: str, epoch: int, epochs: int, loss: float) -> None:
        pass

    def on_rung_end(self, label: str) -> None:
        pass
