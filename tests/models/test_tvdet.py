"""torchvision's detectors as teachers: a new head for the data's classes, fine-tuned with
torchvision's own losses through edgekd's trainer, known by their detections (labels shifted
past torchvision's background), round-tripping through a checkpoint, exported as deployed, and
refused clearly where they cannot serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from edgekd.distill.trainer import predict_logits, train
from edgekd.errors import CheckpointError, ConfigError
from edgekd.models.detnet import boxes_only, decode
from edgekd.models.io import load_checkpoint, save_checkpoint
from edgekd.models.shrink import teacher_record
from edgekd.models.sources import SourceRequest, load_model
from edgekd.models.tvdet import TorchvisionDetector, export_onnx
from edgekd.tasks.detection import DetectionTask

NAME = "ssdlite320_mobilenet_v3_large"  # torchvision's smallest detector
SIZE = 64


def request(weights: Path | None, bands: int = 3) -> SourceRequest:
    return SourceRequest(in_channels=bands, num_classes=2, data_mean=[0.5] * bands, data_std=[0.25] * bands,
                         require_weights=True, task="detection", image_size=SIZE, weights=weights)


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory) -> Path:
    """A state dict of the detector for COCO's 91 classes (what torch hub caches)."""
    import torchvision

    path = tmp_path_factory.mktemp("w") / "ssdlite.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.get_model(NAME, weights=None, weights_backbone=None, num_classes=91).state_dict(),
               path)
    return path


def squares(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one bright square (class 0) or a dark one (class 1) each, and their boxes."""
    rng = np.random.default_rng(0)
    x = torch.full((n, 3, SIZE, SIZE), 0.5)
    y = torch.full((n, 2, 5), -1.0)
    for i in range(n):
        c, s = i % 2, int(rng.integers(16, 28))
        x0, y0 = (int(v) for v in rng.integers(0, SIZE - s, 2))
        x[i, :, y0:y0 + s, x0:x0 + s] = 1.0 if c == 0 else 0.0
        y[i, 0] = torch.tensor([c, x0, y0, x0 + s, y0 + s], dtype=torch.float32)
    return x, y


@pytest.fixture(scope="module")
def tuned(coco_like: Path) -> tuple[nn.Module, list[float]]:
    loaded = load_model(f"torchvision:{NAME}", request(coco_like))
    assert loaded.needs_training and "tensors new for the data's classes" in loaded.origin
    x, y = squares(8)
    hist = train(loaded.model, x, y, epochs=6, batch_size=4, lr=1e-3, seed=0, task=DetectionTask(),
                 augmentations=("flip",))
    return loaded.model, hist.epoch_loss


def test_a_torchvision_detector_fine_tunes_with_its_own_losses_and_teaches_by_boxes(tuned, tmp_path: Path):
    net, loss = tuned
    assert boxes_only(net) and net.name == f"torchvision:{NAME}"
    assert loss[-1] < loss[0]  # torchvision's losses were what it minimised
    x, y = squares(8)
    ev = DetectionTask().evaluate(predict_logits(net, x), y, classes=["light", "dark"])
    assert ev["map50"] > 0.1  # its BatchNorm statistics recalibrated: eval mode finds the squares
    rows = predict_logits(net, x[:2])
    assert rows.shape[0] == 2 and rows.shape[2] == 2 + 5  # edgekd's detector rows, the data's 2 classes
    save_checkpoint(tmp_path / "t.pt", net, classes=["light", "dark"], bands=["R", "G", "B"], image_size=SIZE,
                    dataset="squares", role="teacher")
    again, meta = load_checkpoint(tmp_path / "t.pt")
    assert meta["source"]["kind"] == "torchvision-det"
    torch.testing.assert_close(predict_logits(again, x[:2]), rows)


def test_its_detections_become_rows_of_the_data_classes():
    """torchvision's label c + 1 is the data's class c (its 0 is the background)."""
    det = TorchvisionDetector(NAME, 2, SIZE)

    class Fixed(nn.Module):
        def forward(self, images):
            return [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([2])} for _ in images]

    det.net = Fixed()
    boxes, scores = decode(det(torch.rand(1, 3, SIZE, SIZE)))
    best = scores[0].flatten().argmax()
    loc, cls = divmod(int(best), 2)
    assert cls == 1 and float(scores[0].flatten()[best]) == pytest.approx(0.9, abs=0.02)
    torch.testing.assert_close(boxes[0, loc], torch.tensor([8.0, 8.0, 40.0, 30.0]), atol=0.5, rtol=0)


def test_the_deployable_graph_gives_what_pytorch_gives(tuned, tmp_path: Path):
    """Its 20 best detections come out of the graph alike, labels as the data's classes."""
    import onnxruntime as ort

    det = tuned[0].inner.eval()
    path = export_onnx(det, tmp_path / "t.onnx", [1, 3, SIZE, SIZE])
    x = squares(1)[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels"]
    boxes, scores, labels = (torch.from_numpy(a) for a in sess.run(None, {"input": x.numpy()}))
    with torch.no_grad():
        want = det.net(list(x))[0]
    assert len(want["boxes"]) >= 20 and labels.min() >= 0
    for box, score, label in zip(want["boxes"][:20], want["scores"][:20], want["labels"][:20]):
        same = (box_iou(box[None], boxes)[0] > 0.99) & (labels == label - 1) & ((scores - score).abs() < 1e-4)
        assert same.any(), (box, score, label)


def test_torchvision_detectors_are_refused_clearly(coco_like: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="takes RGB images and the data has 4 bands"):
        load_model(f"torchvision:{NAME}", request(coco_like, bands=4))
    with pytest.raises(ConfigError, match="fcos_resnet50_fpn"):
        load_model("torchvision:fcos_resnet50", request(coco_like))
    with pytest.raises(CheckpointError, match="--teacher-weights FILE"):
        load_model(f"torchvision:{NAME}", request(None))
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="holds no weights of torchvision"):
        load_model(f"torchvision:{NAME}", request(other))
    with pytest.raises(ValueError, match="teaches by its detections"):
        teacher_record(load_model(f"torchvision:{NAME}", request(coco_like)).model, 3, 2)


# torchvision's SSDLite as a student (--students ssdlite): built for the data's classes (weights from
# --student-weights-dir where given), distilled by pseudo-boxes through its own losses, shipped as its
# own graph with decoding and NMS inside, refused where it cannot go

def test_an_ssdlite_student_learns_from_the_labels_and_the_teachers_sure_boxes(coco_like: Path, tmp_path: Path):
    from edgekd.distill.teacher import InMemoryTeacher
    from edgekd.models.arch import TorchvisionSpec
    from edgekd.models.detnet import encode
    from edgekd.models.sources import build_student

    spec = TorchvisionSpec(model=NAME)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / f"{NAME}.pth").write_bytes(coco_like.read_bytes())
    student, origin = build_student(spec, 3, 2, [0.5] * 3, [0.25] * 3, task="detection", image_size=SIZE,
                                    weights_dir=tmp_path / "w")
    assert "tensors new for the data's classes" in origin and student.name == f"torchvision:{NAME}"
    _, scratch = build_student(spec, 3, 2, [0.5] * 3, [0.25] * 3, task="detection", image_size=SIZE)
    assert scratch.startswith("from scratch") and f"{NAME}.pth" in scratch
    with pytest.raises(ConfigError, match="4 bands; use a timm:NAME student"):
        build_student(spec, 4, 2, [0.5] * 4, [0.25] * 4, task="detection", image_size=SIZE)

    x, y = squares(4)
    extra = torch.tensor([[2.0, 2.0, 14.0, 14.0]])  # a sure teacher detection no label covers (class 1)
    unsure = torch.tensor([[46.0, 46.0, 62.0, 62.0]])  # and one it is not sure of
    rows = torch.stack([encode(torch.cat([extra, unsure]), torch.tensor([0.9, 0.3]), torch.tensor([1, 0]), SIZE, 2)
                        for _ in range(4)])
    seen: list[torch.Tensor] = []
    own = student.inner.own_loss

    def spy(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.append(targets.clone())
        return own(images, targets)

    student.inner.own_loss = spy
    hist = train(student, x, y, epochs=2, batch_size=4, lr=1e-3, seed=0, teacher=InMemoryTeacher(rows),
                 terms=[("head", 1.0)], task=DetectionTask())  # head is edgekd's: a torchvision student takes boxes
    assert np.isfinite(hist.epoch_loss).all() and len(seen) == 2
    for targets in seen[0]:  # the batch in the trainer's order: each image's label, then the teacher's sure box
        real = targets[targets[:, 0] >= 0]
        assert len(real) == 2  # not the unsure one
        assert any(torch.equal(real[0], label) for label in y[:, 0])
        assert real[1, 0] == 1 and box_iou(real[1:, 1:5], extra)[0, 0] > 0.95


def test_an_ssdlite_student_ships_as_its_own_graph_with_nms(tuned, tmp_path: Path):
    """ONNX and OpenVINO of the detector as deployed, checked against PyTorch in mAP50 and matched
    boxes; the deployable graph at edgekd's export thresholds, recorded in its metadata; INT8 and
    the other formats refused with the fix."""
    import onnx

    from edgekd.errors import ExportError
    from edgekd.export.base import ExportContext, export_model
    from edgekd.export.detection import check_nms_export, deployable
    from edgekd.tasks.detection import EXPORT_SCORE, MAX_DETECTIONS, NMS_IOU

    net = tuned[0]
    x, y = squares(8)
    ctx = ExportContext(input_shape=[1, 3, SIZE, SIZE], metadata={"arch": "tv"}, compare=DetectionTask().compare)
    for fmt in ("onnx", "openvino"):
        res = export_model(fmt, net, tmp_path, "s", ctx, x, y)
        assert res.parity.metric == "mAP50" and res.parity.accuracy_delta == pytest.approx(0.0, abs=1e-6)
        assert res.parity.top1_agreement == 1.0 and any("own decoding and NMS" in n for n in res.notes)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "s.onnx")).metadata_props}
    assert meta["arch"] == "tv" and float(meta["score_threshold"]) < EXPORT_SCORE  # torchvision's own, for mAP
    with pytest.raises(ExportError, match="ships as its FP32 graph .* export it as onnx or openvino"):
        export_model("onnx-int8", net, tmp_path, "s", ctx, x, y)

    path, agreement = deployable(net, x, ["light", "dark"], tmp_path, "s", {"run_id": "r"})
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert (float(meta["score_threshold"]), float(meta["iou_threshold"]), int(meta["max_detections"])) == \
        (EXPORT_SCORE, NMS_IOU, MAX_DETECTIONS)
    assert meta["classes"] == "light,dark" and agreement.agrees and agreement.torch_boxes > 0
    assert net.inner.current_thresholds()[0] < EXPORT_SCORE  # the thresholds are set back after the export
    again = check_nms_export(net, path, x, EXPORT_SCORE, NMS_IOU, MAX_DETECTIONS)
    assert again.agrees and again.torch_boxes == agreement.torch_boxes


def test_ssdlite_students_are_refused_where_they_cannot_go():
    from edgekd.config import RunConfig
    from edgekd.pipeline.plan import check_detection, check_students

    with pytest.raises(ConfigError, match="is a detection student; use it with --task detection"):
        check_students(["ssdlite"], "classification")
    with pytest.raises(ConfigError, match="for --task detection edgekd builds ssdlite320_mobilenet_v3_large"):
        check_students(["torchvision:fcos_resnet50_fpn"], "detection")
    with pytest.raises(ConfigError, match="for --task segmentation edgekd builds lraspp"):
        check_students(["ssdlite"], "segmentation")
    check_students(["edgenet", "ssdlite"], "detection")
    cfg = RunConfig(task="detection", students=["edgenet", "ssdlite"], precisions=["fp32", "int8"])
    with pytest.raises(ConfigError, match="searched at fp32 .* leave --precisions int8 out"):
        check_detection(cfg, [("head", 1.0)])
    check_detection(cfg.model_copy(update={"precisions": ["fp32"]}), [("head", 1.0)])
