"""The segmentation task: per-pixel KD terms and mIoU against hand values, joint augmentation,
the task seam (classification unchanged, the layout read), dense models and their checkpoints."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd.distill.losses import KDInputs, KDSettings, channel_wise_kd_loss, combined_loss, response_kd_loss
from edgekd.distill.teacher import TeacherOutputs, apply_view
from edgekd.errors import ConfigError, DataError
from edgekd.metrics import metrics_from_confusion
from edgekd.models.arch import ArchSpec, TimmSpec, TorchvisionSpec
from edgekd.models.io import load_checkpoint, save_checkpoint
from edgekd.models.sources import build_student
from edgekd.tasks import detect_task, get_task, resolve_task
from edgekd.tasks.segmentation import SegmentationTask


def test_miou_from_a_hand_confusion_matrix():
    # truth 0: 4 px (2 right, 1 as class 1, 1 as class 2); truth 1: 2 px (both right); class 2 never true
    m = metrics_from_confusion(np.array([[2, 1, 1], [0, 2, 0], [0, 0, 0]]), ["a", "b", "c"], "validation", 1)
    # IoU a = 2 / (4 + 2 - 2) = 0.5; b = 2 / (2 + 3 - 2) = 2/3; c absent from the truth: left out of the mean
    assert m.classes[0].iou == pytest.approx(0.5) and m.classes[1].iou == pytest.approx(2 / 3)
    assert m.classes[2].iou is None and m.miou == pytest.approx((0.5 + 2 / 3) / 2)
    assert m.pixel_accuracy == pytest.approx(4 / 6)


def test_evaluate_leaves_ignore_pixels_out_and_upsamples_logits():
    task = SegmentationTask(ignore_index=255)
    y = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 1, 1], [255, 255, 1, 1]]], dtype=torch.uint8)
    # logits at stride 2: left half says class 0, right half class 1 -> every labelled pixel right
    logits = torch.tensor([[[[5.0, -5.0], [5.0, -5.0]], [[-5.0, 5.0], [-5.0, 5.0]]]])
    ev = task.evaluate(logits, y)
    assert ev["miou"] == pytest.approx(1.0) and ev["pixel_accuracy"] == pytest.approx(1.0)
    # the ignore pixels predicted wrong change nothing; a labelled pixel predicted wrong does
    y2 = y.clone()
    y2[0, 0, 0] = 1
    ev2 = task.evaluate(logits, y2)
    assert ev2["pixel_accuracy"] == pytest.approx(11 / 12)
    # class 0: TP 3, FP 1 (the relabelled pixel) -> 3/4; class 1: TP 8, FN 1 -> 8/9
    assert ev2["miou"] == pytest.approx((3 / 4 + 8 / 9) / 2)


def test_pixel_response_kd_averages_over_valid_pixels_only():
    torch.manual_seed(0)
    task = SegmentationTask(ignore_index=255)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0, :2] = 255  # 8 ignore pixels
    rows, labels, (t_rows,) = task.kd_rows(s, y, [t])
    assert rows.shape == (32 - 8, 3) and labels.shape == (24,) and (labels != 255).all()
    got = response_kd_loss(rows, t_rows, labels, alpha=0.3, temperature=2.0)
    # by hand: every valid pixel its own sample
    valid = y != 255
    sp, tp = s.permute(0, 2, 3, 1)[valid], t.permute(0, 2, 3, 1)[valid]
    ce = F.cross_entropy(sp, y[valid])
    kl = sum(float((F.softmax(tp[i] / 2, 0) * (F.log_softmax(tp[i] / 2, 0) - F.log_softmax(sp[i] / 2, 0))).sum())
             for i in range(len(sp))) / len(sp)
    assert float(got) == pytest.approx(0.3 * float(ce) + 0.7 * 4 * kl, rel=1e-5)
    # an ignore pixel's logits do not reach the loss: changing them changes nothing
    s2 = s.clone()
    s2[0, :, 0, 0] += 100
    rows2, labels2, (t2,) = task.kd_rows(s2, y, [t])
    assert float(response_kd_loss(rows2, t2, labels2, alpha=0.3, temperature=2.0)) == pytest.approx(float(got))


def test_student_logits_are_upsampled_to_the_mask_for_kd():
    task = SegmentationTask()
    s, t = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 4, 4)  # student at stride 2, teacher at full size
    rows, labels, (t_rows,) = task.kd_rows(s, torch.zeros(1, 8, 8, dtype=torch.long), [t])
    assert rows.shape == (64, 2) and t_rows.shape == (64, 2)


def test_channel_wise_distillation_against_hand_values():
    s = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    t = torch.tensor([[[[3.0, 2.0], [1.0, 0.0]]]])
    tau = 2.0
    p_t, log_p_s = F.softmax(t.flatten() / tau, 0), F.log_softmax(s.flatten() / tau, 0)
    hand = tau**2 * float((p_t * (p_t.log() - log_p_s)).sum())
    assert float(channel_wise_kd_loss(s, t, tau)) == pytest.approx(hand, rel=1e-6)
    assert float(channel_wise_kd_loss(t, t, tau)) == pytest.approx(0.0, abs=1e-7)
    # a student map of another size is resized to the teacher's
    assert math.isfinite(float(channel_wise_kd_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8), 4.0)))


def test_cwd_term_needs_dense_maps():
    b = KDInputs(student_logits=torch.randn(4, 3), labels=torch.zeros(4, dtype=torch.long),
                 teacher_logits=[torch.randn(4, 3)])
    with pytest.raises(ConfigError, match="--task segmentation"):
        combined_loss([("cwd", 1.0)], b, KDSettings())


def test_augment_moves_masks_with_their_images():
    task = SegmentationTask()
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    y = torch.arange(2 * 16).reshape(2, 4, 4) % 7
    for kinds in (("flip",), ("rot90",), ("flip", "rot90")):
        xa, ya = task.augment(x, y.clone(), torch.Generator().manual_seed(3), kinds)
        # the image's pixel values are a function of the mask here: the pairing must survive
        assert torch.equal(xa[:, 0].long() % 7, ya)
    xa, ya = task.augment(x, y.clone(), torch.Generator().manual_seed(1), ("crop",))
    assert xa.shape == x.shape and ya.shape == y.shape and ya.dtype == y.dtype
    assert set(ya.unique().tolist()) <= set(y.unique().tolist())  # nearest: no new class values
    assert torch.equal(task.view_labels(y, 5), apply_view(y, 5))


def test_classification_task_is_the_old_behaviour():
    task = get_task("classification")
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 1])
    s, labels, t = task.kd_rows(x[:, :, 0, :3], y, [x[:, :, 0, :3]])
    assert s is not None and torch.equal(labels, y) and len(t) == 1
    assert torch.equal(task.view_labels(y, 3), y) and task.metric == "accuracy"
    xa, ya = task.augment(x, y, torch.Generator().manual_seed(0), ("flip",))
    assert torch.equal(ya, y)


def test_layout_decides_the_task(tmp_path: Path):
    (tmp_path / "seg" / "images").mkdir(parents=True)
    (tmp_path / "seg" / "masks").mkdir()
    (tmp_path / "cls" / "forest").mkdir(parents=True)
    assert detect_task(tmp_path / "seg") == "segmentation"
    assert detect_task(tmp_path / "cls") == "classification" and detect_task(None) == "classification"
    (tmp_path / "coco" / "images").mkdir(parents=True)
    (tmp_path / "coco" / "annotations.json").write_text("{}")
    assert detect_task(tmp_path / "coco") == "detection"
    (tmp_path / "yolo" / "labels").mkdir(parents=True)
    assert detect_task(tmp_path / "yolo") == "detection"
    (tmp_path / "yolo" / "annotations.json").write_text("{}")
    with pytest.raises(DataError, match="keep one label format"):
        detect_task(tmp_path / "yolo")
    (tmp_path / "half" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="no masks/"):
        detect_task(tmp_path / "half")
    with pytest.raises(ConfigError, match="segmentation"):
        resolve_task("segmentaton", None)
    with pytest.raises(ConfigError, match="--task segmentation"):
        resolve_task("classification", tmp_path / "seg")  # two "class folders" images/ and masks/ would mislead
    assert resolve_task("auto", tmp_path / "seg") == "segmentation"


@pytest.mark.parametrize("spec", [ArchSpec(width=0.25, depth=1), TimmSpec(model="efficientnet_lite0"),
                                  TorchvisionSpec(model="lraspp_mobilenet_v3_large")], ids=lambda s: s.name)
def test_dense_students_round_trip_through_weights_only_checkpoints(spec, tmp_path: Path):
    model, _ = build_student(spec, 4, 5, [0.1] * 4, [0.2] * 4, pretrained=False, task="segmentation")
    model.eval()
    x = torch.rand(2, 4, 64, 64)
    out = model(x)
    assert out.shape[:2] == (2, 5) and out.shape[-1] == 64 // model.output_stride
    save_checkpoint(tmp_path / "s.pt", model, classes=list("abcde"), bands=list("RGBN"), image_size=64, dataset="d",
                    role="student")
    again, meta = load_checkpoint(tmp_path / "s.pt")
    assert meta["source"]["kind"] in ("seg", "torchvision-seg")
    assert torch.allclose(again(x), out, atol=1e-5)


def test_teacher_cache_holds_dense_logits_in_float16(tmp_path: Path):
    model, _ = build_student(ArchSpec(width=0.25, depth=1), 3, 4, [0.0] * 3, [1.0] * 3, task="segmentation")
    x = torch.rand(6, 3, 32, 32)
    out = TeacherOutputs.build(tmp_path, [model], x, views=2)
    assert out.logits[0].dtype == np.float16 and out.logits[0].shape == (2, 6, 4, 8, 8)
    b = out.batch(torch.tensor([1, 4]), 1, apply_view(x[[1, 4]], 1))
    with torch.no_grad():
        ref = model.eval()(apply_view(x[[1, 4]], 1))
    assert torch.allclose(b.logits[0].float(), ref, atol=2e-2)


def test_each_task_has_its_default_kd_terms_and_a_given_kd_wins():
    from edgekd.config import build_config
    from edgekd.pipeline.plan import StageTimer, resolve_run

    seg = resolve_run(build_config({"task": "segmentation", "preset": "smoke", "samples_per_class": 4}), False,
                      StageTimer())
    assert seg.cfg.kd == ["response", "cwd:3"] and [n for n, _ in seg.terms] == ["response", "cwd"]
    given = resolve_run(build_config({"task": "segmentation", "preset": "smoke", "samples_per_class": 4,
                                      "kd": ["response"]}), False, StageTimer())
    assert given.terms == [("response", 1.0)]
    cls = resolve_run(build_config({"preset": "smoke", "samples_per_class": 4}), False, StageTimer())
    assert cls.terms == [("response", 1.0)] and cls.cfg.task == "classification"
