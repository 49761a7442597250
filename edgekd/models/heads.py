"""A classifier's head, found and extended with new classes (incremental updates): the old
classes' rows are kept as they are, the new rows start as a fresh layer's would."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointError


def find_head(model: nn.Module, num_classes: int) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, layer) of the last Linear layer with `num_classes`
    outputs: the classifier of EdgeNet, timm and torchvision models."""
    found = None
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) and child.out_features == num_classes:
                found = (parent, name, child)
    if found is None:
        raise CheckpointError(f"{getattr(model, 'name', type(model).__name__)} has no Linear classifier with "
                              f"{num_classes} outputs: its head cannot be extended with new classes")
    return found


def extend_head(model: nn.Module, num_classes: int, added: int, seed: int = 0) -> nn.Module:
    """`model` with `added` outputs appended to its `num_classes`-way classifier, in place.
    Rows 0..num_classes-1 (weights and bias) are the old ones, unchanged."""
    parent, name, old = find_head(model, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes + added, bias=old.bias is not None)
    with torch.no_grad():
        new.weight[:num_classes] = old.weight
        if old.bias is not None and new.bias is not None:
            new.bias[:num_classes] = old.bias
            new.bias[num_classes:] = old.bias.mean()  # new classes start at the old ones' typical prior
    setattr(parent, name, new)
    source = getattr(model, "source", None)
    if isinstance(source, dict) and "num_classes" in source:  # an ExternalNet is rebuilt from its source
        source["num_classes"] = num_classes + added
    return model
