"""`edgekd calibrate`: measure a set of calibration models on the target (here, or through the
device agent), fit the device model's factors to them and store the calibration.

The set spans what edgekd builds and what its factors must tell apart: EdgeNets (thin and wide,
shallow and deep, 3x3 and 5x5), timm families (MobileNetV2/V3, EfficientNet-Lite, plain-conv
ResNets) and segmentation models (EdgeNet-Seg and a timm encoder under the light FPN decoder)
at several resolutions. `holdout_set` is disjoint from it (other widths, expansions,
resolutions and families) and is what benchmarks/predictor_accuracy.py scores."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...models.arch import ArchSpec, TimmSpec, TorchvisionSpec
from ...targets import Target
from ..measurement import Measurement
from .calibration import Calibration, default_factors, fit_factors, now, save_calibration
from .graph import graph_costs

CHANNELS = 3


@dataclass(frozen=True)
class CalModel:
    spec: ArchSpec | TimmSpec | TorchvisionSpec
    resolution: int
    task: str = "classification"

    @property
    def name(self) -> str:
        return f"{'seg-' if self.task == 'segmentation' else ''}{self.spec.name}-r{self.resolution}"

    @property
    def family(self) -> str:
        """The group cross-validation leaves out together (one architecture family and task)."""
        base = "edgenet" if isinstance(self.spec, ArchSpec) else self.spec.model
        return f"{self.task}:{base}"


def calibration_set() -> list[CalModel]:
    """The models `edgekd calibrate` measures."""
    out = [CalModel(ArchSpec(width=w, depth=d, kernel=k, expansion=2 if i % 2 else 4), r)
           for i, (w, d, k, r) in enumerate(itertools.product((0.25, 0.5, 1.0, 2.0), (1, 3), (3, 5), (32, 64)))]
    # expansions whose blocks are not whole vector blocks (3 x 24 = 72 channels, 6 x 12 = 72, ...)
    out += [CalModel(ArchSpec(width=w, depth=d, kernel=k, expansion=e), r)
            for w, d, k, e, r in ((0.5, 1, 3, 3, 64), (2.0, 2, 5, 3, 32), (1.0, 3, 3, 6, 64), (0.25, 2, 5, 6, 96),
                                  (1.0, 1, 5, 3, 96), (0.5, 3, 5, 6, 48))]
    for name in ("mobilenetv3_small_050", "mobilenetv3_large_075", "efficientnet_lite1", "mobilenetv2_050",
                 "resnet10t", "resnet34"):
        out += [CalModel(TimmSpec(model=name), r) for r in (32, 96)]
    for spec in (ArchSpec(width=0.5, depth=1), ArchSpec(width=1.0, depth=2), TimmSpec(model="mobilenetv3_large_075")):
        out += [CalModel(spec, r, "segmentation") for r in (64, 256)]
    return out


def holdout_set() -> list[CalModel]:
    """Models and sizes none of `calibration_set` has: EdgeNets of other widths, expansions and
    kernels; the timm students edgekd selects (MobileNetV3, EfficientNet-Lite0, ResNet-18); the
    segmentation students (LRASPP, EdgeNet-Seg, EfficientNet-Lite0 + FPN), at sizes edgekd uses."""
    out = [CalModel(ArchSpec(width=w, depth=d, kernel=k, expansion=3), r)
           for w, d, k, r in ((0.75, 2, 3, 48), (0.75, 2, 7, 96), (1.5, 2, 3, 96), (1.5, 2, 7, 48),
                              (0.375, 4, 5, 40), (1.25, 4, 5, 80), (0.5, 2, 3, 128), (1.0, 2, 5, 128))]
    for name in ("mobilenetv3_small_075", "mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_lite0",
                 "resnet18"):
        out += [CalModel(TimmSpec(model=name), r) for r in (64, 128)]
    for spec in (TorchvisionSpec(model="lraspp_mobilenet_v3_large"), ArchSpec(width=0.75, depth=2),
                 TimmSpec(model="efficientnet_lite0")):
        out += [CalModel(spec, r, "segmentation") for r in (128, 192)]
    return out


def export_set(models: list[CalModel], folder: Path) -> list[tuple[Path, list[int]]]:
    """Each model as ONNX (raw-image input, as edgekd exports it), built without weights."""
    from ...convert.onnx import to_onnx
    from ...models.sources import build_student

    out = []
    for m in models:
        shape = [1, CHANNELS, m.resolution, m.resolution]
        path = folder / f"{m.name}.onnx"
        if not path.exists():
            classes = 7 if m.task == "segmentation" else 10
            net, _ = build_student(m.spec, CHANNELS, classes, [0.0] * CHANNELS, [1.0] * CHANNELS, pretrained=False,
                                   task=m.task)
            to_onnx(net.eval(), path, shape)
        out.append((path, shape))
    return out


Measure = Callable[[Path, list[int]], Measurement]


def calibrate(target: Target, runtime: str, precision: str, measure: Measure,
              models: list[CalModel] | None = None, work: Path | None = None,
              on_model: Callable[[str], None] = lambda _: None, save: bool = True) -> Calibration:
    from .roofline import peak_figures

    models = models or calibration_set()
    work = work or Path(tempfile.mkdtemp(prefix="edgekd-calibrate-"))
    costs, lat, mem, conditions = [], [], [], {}
    for m, (path, shape) in zip(models, export_set(models, work)):
        got = measure(path, shape)
        costs.append(graph_costs(path, shape, precision))
        lat.append(got.latency_ms.p50 / 1000)
        mem.append(got.peak_memory_mb)
        conditions = {"runtime_version": got.runtime_version, "threads": got.threads, "device": got.device,
                      "latency_statistic": "p50", "source": got.source.get("latency")}
        on_model(m.name)
    prior = default_factors(target, *peak_figures(target, precision))
    fit = fit_factors(costs, lat, prior, measured_memory_mb=mem, groups=[m.family for m in models])
    cal = Calibration(target=target.name, runtime=runtime, precision=precision, factors=fit.factors,
                      n_models=len(models), fitted_at=now(), in_sample_median_abs_error_pct=fit.median_abs_error_pct,
                      cv_median_abs_error_pct=fit.cv_median_abs_error_pct, cv_within_10pct=fit.cv_within_10pct,
                      conditions=conditions)
    if save:
        save_calibration(cal)
    return cal
