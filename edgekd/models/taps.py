"""Feature maps of named modules, read by forward hooks: feature distillation between any two
models, whatever their families (`feature_pairs` by module name).

A name is a path of `named_modules()`, as the user's own code spells it: for a model edgekd
wraps (timm, torchvision, a factory) the wrapper's `inner.` prefix may be left out, so a
torchvision ResNet teacher's `layer3` works as written."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import close_matches


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Every module by its name, and the names without a wrapper's `inner.` prefix."""
    found = dict(model.named_modules())
    inner = getattr(model, "inner", None)
    if isinstance(inner, nn.Module):
        found.update({k: v for k, v in inner.named_modules() if k and k not in found})
    return found


def resolve_modules(model: nn.Module, names: list[str], role: str) -> list[nn.Module]:
    """The modules `names` name in `model`; an unknown name is a ConfigError that names the
    closest module and how to list them all."""
    if isinstance(model, torch.jit.ScriptModule) or isinstance(getattr(model, "inner", None), torch.jit.ScriptModule):
        raise ConfigError(f"feature_pairs by module name need hooks on the {role}'s modules, which a TorchScript "
                          "model does not run; give the model as timm, torchvision, a factory or an edgekd "
                          "checkpoint, or pair stages by index")
    found = _candidates(model)
    out = []
    for n in names:
        if n not in found:
            listing = [k for k in found if k and "." not in k.removeprefix("inner.")][:12]
            raise ConfigError(f"feature_pairs: the {role} has no module {n!r}; {close_matches(n, found)}"
                              f"top-level modules are {', '.join(listing)} (list them all with "
                              "[n for n, _ in model.named_modules()])")
        out.append(found[n])
    return out


def tapped_features(model: nn.Module, x: torch.Tensor, names: list[str], role: str = "model",
                    modules: list[nn.Module] | None = None) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """(logits, the named modules' outputs in order, pooled embedding of the last one).
    `modules`: `names` already resolved (a training loop resolves them once, not every batch)."""
    outputs: dict[int, torch.Tensor] = {}
    modules = modules if modules is not None else resolve_modules(model, names, role)
    handles = [m.register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
               for i, m in enumerate(modules)]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    feats = []
    for i, n in enumerate(names):
        f = outputs.get(i)
        if f is None:
            raise ConfigError(f"feature_pairs: the {role}'s module {n!r} did not run in the forward pass; name "
                              "a module on the path from the input to the logits")
        f = f[0] if isinstance(f, (tuple, list)) else f
        if f.dim() == 3:  # a transformer's tokens (N, L, C): a 1 x L map of C channels
            f = f.transpose(1, 2).unsqueeze(2)
        if f.dim() != 4:
            raise ConfigError(f"feature_pairs: the {role}'s module {n!r} gives a {f.dim()}-d output; name a "
                              "module whose output is a feature map (N, C, H, W) or tokens (N, L, C)")
        feats.append(f)
    return logits, feats, feats[-1].mean(dim=(2, 3))


@torch.no_grad()
def tapped_channels(model: nn.Module, names: list[str], in_channels: int, size: int, role: str = "model"
                    ) -> list[int]:
    """Channels of each named module's output, from one probe forward in eval mode."""
    was = model.training
    model.eval()
    try:
        _, feats, _ = tapped_features(model, torch.zeros(1, in_channels, size, size), names, role)
    finally:
        model.train(was)
    return [f.shape[1] for f in feats]
