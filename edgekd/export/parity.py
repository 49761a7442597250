"""Parity of an exported model with the PyTorch model it came from (pure comparison)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..agreement import Parity, compare_logits
from ..data.store import Images, Labels
from ..tolerances import DEFAULT_TOLERANCES, ParityTolerance, default_tolerance

__all__ = ["DEFAULT_TOLERANCES", "Parity", "ParityTolerance", "check_parity", "compare_logits", "default_tolerance"]


@torch.no_grad()
def check_parity(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray],
                 x: Images, y: Labels, batch_size: int = 64,
                 compare: Callable[[np.ndarray, np.ndarray, np.ndarray], Parity] | None = None) -> Parity:
    """The export (`run`) against the PyTorch model on (x, y), compared in the task's terms
    (`compare`; default: classification's top-1 agreement and accuracy)."""
    model.eval()
    ref, got = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        ref.append(model(xb).numpy())
        got.append(np.asarray(run(xb.numpy()), dtype=np.float32))
    return (compare or compare_logits)(np.concatenate(ref), np.concatenate(got), y.numpy())
