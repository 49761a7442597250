"""Students cut from the teacher: whole residual blocks dropped by importance (depth, as
Minitron does), then its channel groups pruned by importance with Torch-Pruning
(DepGraph: every layer coupled to a pruned channel — the BatchNorm after it, the convolution
that reads it, a residual sum's other branch — is pruned with it), recorded as a plan that
replays on a fresh copy of the teacher's structure.

A plan lists the blocks dropped (each replaced by the identity: a residual block whose input and
output shapes match) and then, in the order they were applied, the module whose output channels
were cut and the indices cut at that moment. Replaying it on the structure the teacher's source rebuilds
gives the shrunk structure exactly (the same modules, the same shapes), so a checkpoint keeps
only the plan and the weights (loaded with `weights_only=True`).

Importance criteria (`IMPORTANCE`): `magnitude` (L2 norm of each group's weights), `taylor`
(|weight x gradient| of the task loss on a calibration batch), `activation` (mean absolute
output of each channel on a calibration batch, as Minitron ranks width). Depth: a block's
importance is the task loss on the calibration batch with that block alone skipped (Minitron's
loss-based ranking) where a loss is given, else 1 - cos(block input, block output) (its Block
Importance); the least important go.

Kept channel counts are rounded to multiples of 16 by default: measured here
(`benchmarks/results/shrink_rounding.md`, ONNX Runtime on AVX-512), cuts keeping half the channels
ran 9-28 % faster rounded to 16 than to 8, though they kept more FLOPs; unrounded counts ran up to
4.4x slower."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn

IMPORTANCE = ("magnitude", "taylor", "activation")
UNWRAPPED = "Unwrapped parameters detected"  # a detector's per-level box scales: no channels, never cut


class Cut(BaseModel):
    module: str  # name in model.named_modules()
    idxs: list[int]  # output channels removed, indices as they were when removed


class ShrinkPlan(BaseModel):
    keep: float = Field(gt=0, le=1, description="share of each prunable layer's channels kept")
    importance: str = "magnitude"
    round_to: int = Field(default=16, ge=1, description="kept channel counts are multiples of this")
    drop_share: float = Field(default=0.0, ge=0, lt=1, description="share of the droppable blocks dropped")
    depth_importance: str = Field(default="none", description="loss, cosine, or none (no block dropped)")
    drop: list[str] = Field(default=[], description="blocks replaced by the identity, before any cut")
    cuts: list[Cut] = []


def _ignored(model: nn.Module, x: torch.Tensor) -> list[nn.Module | nn.Parameter]:
    """Layers whose outputs are the task's keep every channel: the last linear layer (a
    classifier's classes) and every layer with as many outputs as the model has classes (a dense
    head's last convolution, an auxiliary head; an inner layer that happens to have that many
    channels is merely left whole); a detector's output convolutions (classes, box sides,
    centre-ness) and its per-level box scales."""
    from .detnet import DetHead

    detectors = [m for m in model.modules() if isinstance(m, DetHead)]
    if detectors:  # a detector's class, box and centre-ness convolutions: outputs N x A x (K + 5)
        return [part for head in detectors for part in (head.cls, head.box, head.ctr, head.scales)]
    with torch.no_grad():
        out = model(x)
    out = out["out"] if isinstance(out, dict) else out[0] if isinstance(out, (tuple, list)) else out
    k = out.shape[1]
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    heads = [m for m in model.modules() if (isinstance(m, nn.Conv2d) and m.out_channels == k)
             or (isinstance(m, nn.Linear) and m.out_features == k)]
    return list({id(m): m for m in last_linear + heads}.values())


class _Activation:
    """Minitron's width importance: the mean |output| of each channel of the group's root layer
    on the calibration batch (recorded by forward hooks), summed over the group's layers."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.means: dict[nn.Module, torch.Tensor] = {}
        hooks = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()

    def _hook(self, module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        dims = [0, 2, 3] if out.dim() == 4 else [0]
        self.means[module] = out.detach().abs().mean(dim=dims)

    def __call__(self, group: Any) -> torch.Tensor | None:
        score = None
        for dep, idxs in group:
            layer = dep.target.module
            if layer in self.means and "out_channels" in getattr(dep.handler, "__name__", ""):
                s = self.means[layer][idxs]
                score = s if score is None else score + s
        return score


def _importance(name: str, model: nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor] | None):
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        if loss is None:
            raise ValueError("taylor importance needs a loss on the calibration batch")
        model.zero_grad()
        loss(model(x)).backward()
        return tp.importance.GroupTaylorImportance()
    if name == "activation":
        return _Activation(model, x)
    raise ValueError(f"importance {name!r}: choose one of {', '.join(IMPORTANCE)}")


def _residual(m: nn.Module) -> bool:
    """A block that adds its input to its output (timm's has_skip, torchvision's use_res_connect,
    EdgeNet's residual, a ResNet block without downsampling)."""
    if any(getattr(m, a, None) is True for a in ("has_skip", "use_res_connect", "residual")):
        return True
    return hasattr(m, "conv1") and hasattr(m, "downsample") and m.downsample is None


def droppable(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The residual blocks of `model` whose output has the shape of their input (so the identity
    can stand in for them), checked on a forward pass of `x`."""
    same: dict[str, bool] = {}
    hooks = []
    for name, m in model.named_modules():
        if name and _residual(m):
            def hook(_m: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                same[name] = isinstance(out, torch.Tensor) and out.shape == inp[0].shape
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [n for n, ok in same.items() if ok and not any(n.startswith(o + ".") for o in same if o != n)]


def _skip(model: nn.Module, names: list[str]) -> None:
    for name in names:
        model.set_submodule(name, nn.Identity())


def _block_scores(model: nn.Module, x: torch.Tensor, names: list[str],
                  loss: Callable[[torch.Tensor], torch.Tensor] | None) -> dict[str, float]:
    """Each droppable block's importance: the loss with it alone skipped, or 1 - cos(in, out)."""
    modules = dict(model.named_modules())
    scores: dict[str, float] = {}
    with torch.no_grad():
        if loss is not None:
            for name in names:
                model.set_submodule(name, nn.Identity())
                scores[name] = float(loss(model(x)))
                model.set_submodule(name, modules[name])
            return scores
        hooks = []
        for name in names:
            def hook(_m: nn.Module, inp: Any, out: torch.Tensor, name: str = name) -> None:
                cos = torch.nn.functional.cosine_similarity(inp[0].flatten(1), out.flatten(1), dim=1)
                scores[name] = float(1 - cos.mean())
            hooks.append(modules[name].register_forward_hook(hook))
        model(x)
        for h in hooks:
            h.remove()
    return scores


def drop_blocks(model: nn.Module, x: torch.Tensor, share: float,
                loss: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[str]:
    """Replace the least important `share` of `model`'s droppable blocks by the identity, in
    place; returns their names (in the model's order)."""
    names = droppable(model, x)
    n = round(share * len(names))
    if n == 0:
        return []
    scores = _block_scores(model, x, names, loss)
    gone = sorted(sorted(names, key=lambda k: scores[k])[:n], key=names.index)
    _skip(model, gone)
    return gone


def shrink(model: nn.Module, x: torch.Tensor, keep: float, importance: str = "magnitude", round_to: int = 16,
           loss: Callable[[torch.Tensor], torch.Tensor] | None = None, drop_share: float = 0.0) -> ShrinkPlan:
    """Drop about `drop_share` of `model`'s residual blocks, then prune it in place to about `keep`
    of each layer's channels (the task's output layers kept whole), ranking blocks and channel
    groups on the calibration batch `x`; returns the plan that replays it. `keep` 1 cuts no
    channel."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    drop = drop_blocks(model, x, drop_share, loss) if drop_share else []
    plan = ShrinkPlan(keep=keep, importance=importance, round_to=round_to, drop_share=drop_share,
                      depth_importance=("loss" if loss is not None else "cosine") if drop else "none", drop=drop)
    if keep >= 1:
        model.train(was_training)
        return plan
    names = {m: n for n, m in model.named_modules()}
    imp = _importance(importance, model, x, loss)
    with warnings.catch_warnings():  # a detector's per-level box scales: ignored below, not a channel
        warnings.filterwarnings("ignore", message=UNWRAPPED)
        pruner = tp.pruner.MetaPruner(model, x, importance=imp, pruning_ratio=1.0 - keep,
                                      ignored_layers=_ignored(model, x), round_to=round_to, global_pruning=False)
    cuts = []
    for group in pruner.step(interactive=True):
        root = group[0]
        cuts.append(Cut(module=names[root.dep.target.module], idxs=[int(i) for i in root.idxs]))
        group.prune()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return plan.model_copy(update={"cuts": cuts})


def replay(model: nn.Module, plan: ShrinkPlan, x: torch.Tensor) -> nn.Module:
    """Apply `plan` to `model` (a fresh structure of the same source) in place; returns it."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    for name in plan.drop:
        if name not in modules:
            raise ValueError(f"the shrink plan drops {name}, which this model does not have: it was made on "
                             "another structure")
    _skip(model, plan.drop)
    if not plan.cuts:
        return model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=UNWRAPPED)
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    modules = dict(model.named_modules())
    for cut in plan.cuts:
        if cut.module not in modules:
            raise ValueError(f"the shrink plan cuts {cut.module}, which this model does not have: it was made on "
                             "another structure")
        layer = modules[cut.module]
        graph.get_pruning_group(layer, graph.get_pruner_of_module(layer).prune_out_channels, idxs=cut.idxs).prune()
    return model


def teacher_record(teacher: nn.Module, in_channels: int, num_classes: int) -> dict[str, Any]:
    """How to rebuild the teacher's structure (no weights): an EdgeNet's architecture, or the
    source record of a model from another library; other teachers cannot be cut (their programs
    cannot be edited, or their structure cannot be rebuilt)."""
    from .external import ExternalNet
    from .family import EdgeNet

    if isinstance(teacher, EdgeNet):
        return {"edgenet": teacher.arch.model_dump(), "in_channels": in_channels, "num_classes": num_classes}
    if isinstance(teacher, ExternalNet) and teacher.source["kind"] in ("timm", "torchvision", "factory", "seg", "det",
                                                                        "torchvision-seg", "smp"):
        return {"external": dict(teacher.source)}
    kind = teacher.source["kind"] if isinstance(teacher, ExternalNet) else type(teacher).__name__
    if kind == "torchvision-det":
        raise ValueError(f"torchvision:{getattr(teacher, 'source', {}).get('name')} is not cut into students: it "
                         "teaches by its detections; give a timm:NAME teacher (a backbone under edgekd's FCOS "
                         "detector) to cut, or other --students")
    kind = {"OnnxTeacher": "ONNX", "torchscript": "TorchScript", "export": "torch.export (.pt2)"}.get(kind, kind)
    raise ValueError(f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} teacher cannot be cut into students: its "
                     "program cannot be edited; give the teacher as an edgekd checkpoint, timm:NAME, "
                     "torchvision:NAME or package.module:function")


def teacher_structure(record: dict[str, Any]) -> nn.Module:
    from .arch import ArchSpec
    from .family import build_model
    from .sources import rebuild

    if "edgenet" in record:
        c = int(record["in_channels"])
        return build_model(ArchSpec.model_validate(record["edgenet"]), c, int(record["num_classes"]), [0.0] * c,
                           [1.0] * c)
    source = record["external"]
    c = int(source["in_channels"])
    return rebuild(source, [0.0] * c, [1.0] * c)


def out_channels(model: nn.Module) -> int:
    """Output channels of every convolution and linear layer of `model`: what a width cut removes."""
    return sum(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))


def cut_from_teacher(teacher: nn.Module, x: torch.Tensor, num_classes: int, keep: float, importance: str = "magnitude",
                     round_to: int = 16, resolution: int | None = None,
                     loss: Callable[[torch.Tensor], torch.Tensor] | None = None, drop: float = 0.0) -> nn.Module:
    """A student cut from `teacher` (left as it is): a copy of it without the least important
    `drop` share of its residual blocks and with about `keep` of its channels (ranked on the
    calibration images `x`), run at `resolution` (resized inside; None: the data's).
    It is an ExternalNet whose source record holds the teacher's structure and the plan, so a
    checkpoint of it rebuilds by replaying the plan (weights only)."""
    import copy

    import torch.nn.functional as F

    from .external import ExternalNet

    record = teacher_record(teacher, x.shape[1], num_classes)
    inner = copy.deepcopy(teacher)
    probe = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False) if resolution \
        else x
    plan = shrink(inner, probe, keep, importance, round_to, loss, drop_share=drop)
    c = x.shape[1]
    name = f"k{keep:g}" + (f"-d{drop:g}" if drop else "") + f"-{importance}" + (f"-r{resolution}" if resolution else "")
    source = {"kind": "from-teacher", "name": name,
              "teacher": record, "plan": plan.model_dump(), "probe": list(probe.shape[1:]), "resolution": resolution,
              "in_channels": c, "num_classes": num_classes}
    # the teacher's own normalisation is inside the copy: the outer one is the identity
    return ExternalNet(inner, [0.0] * c, [1.0] * c, source)


def rebuild_cut(source: dict[str, Any]) -> nn.Module:
    """The structure of a student cut from a teacher: the teacher's structure with the plan
    replayed, and a classifier resized to the student's classes when an update extended its head
    (the recorded class count differs from the teacher's)."""
    from .pretrained import set_num_classes

    record = source["teacher"]
    inner = teacher_structure(record)
    probe = torch.zeros(1, *[int(v) for v in source["probe"]])
    cut = replay(inner.eval(), ShrinkPlan.model_validate(source["plan"]), probe)
    teacher_classes = record["num_classes"] if "edgenet" in record else record["external"]["num_classes"]
    if int(source["num_classes"]) != int(teacher_classes):
        set_num_classes(cut, int(source["num_classes"]))
    return cut
