"""Students cut from the teacher: a shrink plan replayed on a fresh structure gives the shrunk
model exactly; the task's output layer keeps every class; each importance criterion ranks."""

import copy

import pytest
import torch
from torch import nn

from edgekd.models.arch import ArchSpec, TimmSpec
from edgekd.models.family import build_model
from edgekd.models.shrink import IMPORTANCE, ShrinkPlan, replay, shrink
from edgekd.models.sources import build_student

X = torch.rand(4, 3, 32, 32)


def params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("importance", IMPORTANCE)
def test_a_plan_replays_to_the_same_model(importance):
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(width=1.0, depth=2), 3, 5).eval()
    fresh = copy.deepcopy(teacher)
    student = copy.deepcopy(teacher)
    y = torch.tensor([0, 1, 2, 3])
    plan = shrink(student, X, keep=0.5, importance=importance,
                  loss=lambda logits: nn.functional.cross_entropy(logits, y))
    assert plan.cuts and params(student) < 0.5 * params(teacher)
    assert student(X).shape == (4, 5)  # every class kept
    rebuilt = replay(fresh, ShrinkPlan.model_validate_json(plan.model_dump_json()), X)
    rebuilt.load_state_dict(student.state_dict())  # the same structure, so the weights fit as they are
    assert torch.allclose(rebuilt.eval()(X), student.eval()(X), atol=1e-6)
    convs = [m for m in student.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    assert all(c.out_channels % 8 == 0 for c in convs if c.out_channels >= 8)  # what the runtime vectorises


def test_importance_decides_which_channels_go():
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(width=1.0, depth=1), 3, 5).eval()
    a, b = copy.deepcopy(teacher), copy.deepcopy(teacher)
    pa = shrink(a, X, keep=0.5, importance="magnitude")
    pb = shrink(b, X, keep=0.5, importance="activation")
    assert [c.idxs for c in pa.cuts] != [c.idxs for c in pb.cuts]
    with pytest.raises(ValueError, match="taylor importance needs a loss"):
        shrink(copy.deepcopy(teacher), X, keep=0.5, importance="taylor")
    with pytest.raises(ValueError, match="choose one of magnitude, taylor, activation"):
        shrink(copy.deepcopy(teacher), X, keep=0.5, importance="random")


def test_a_timm_teacher_shrinks_and_a_plan_refuses_another_structure():
    net, _ = build_student(TimmSpec(model="mobilenetv3_small_050"), 3, 5, [0.0] * 3, [1.0] * 3, pretrained=False)
    net.eval()
    fresh = copy.deepcopy(net)
    plan = shrink(net, X, keep=0.5)
    replay(fresh, plan, X).load_state_dict(net.state_dict())
    assert torch.allclose(fresh(X), net(X), atol=1e-5)
    other = build_model(ArchSpec(width=0.5, depth=1), 3, 5)
    with pytest.raises(ValueError, match="it was made on another structure"):
        replay(other, plan, X)


def test_a_cut_student_checkpoints_weights_only_and_exports_with_parity(tmp_path):
    import numpy as np

    from edgekd.data.dataset import make_dataset
    from edgekd.distill.trainer import train
    from edgekd.export.run import export_formats
    from edgekd.models.io import load_checkpoint, save_checkpoint
    from edgekd.models.shrink import cut_from_teacher

    g = np.random.default_rng(0)
    x = g.random((96, 3, 32, 32), dtype=np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > x[:, 2].mean(axis=(1, 2))).astype(np.int64)
    ds = make_dataset("tiny", ["a", "b"], ["R", "G", "B"], x, y, val_fraction=0.25, seed=0, synthetic=True,
                      source="test")
    mean, std = ds.channel_stats()
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(width=1.0, depth=1), 3, 2, mean, std)
    train(teacher, ds.x_train, ds.y_train, epochs=3, batch_size=32, lr=1e-2, seed=0)
    student = cut_from_teacher(teacher.eval(), torch.as_tensor(ds.x_train[:32]), 2, keep=0.5, resolution=24)
    assert params(student) < 0.5 * params(teacher) and student.name.startswith("from-teacher:k0.5")
    path = tmp_path / "student.pt"
    save_checkpoint(path, student, classes=ds.classes, bands=ds.bands, image_size=32, dataset="tiny", role="student")
    loaded, _ = load_checkpoint(path)  # rebuilt by replaying the plan, weights loaded weights-only
    xv = torch.as_tensor(ds.x_val)
    assert torch.allclose(loaded(xv), student.eval()(xv), atol=1e-5)
    results = export_formats(loaded, ds, "onnx,openvino,onnx-int8", tmp_path, "cut", {}, calibration_size=32,
                             threads=1)
    by = {r.format: r for r in results}
    assert by["onnx"].parity.max_abs_diff < 1e-4 and by["openvino"].parity.max_abs_diff < 1e-4
    assert by["onnx-int8"].parity.top1_agreement >= 0.9


def test_teachers_whose_programs_cannot_be_edited_are_refused():
    from edgekd.models.shrink import cut_from_teacher
    from edgekd.models.sources import OnnxTeacher

    module = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                            nn.Linear(4, 5)))
    from edgekd.models.external import ExternalNet

    scripted = ExternalNet(module, [0.0] * 3, [1.0] * 3, {"kind": "torchscript", "name": "m.pt", "in_channels": 3,
                                                          "num_classes": 5})
    with pytest.raises(ValueError, match="a TorchScript teacher cannot be cut into students"):
        cut_from_teacher(scripted, X, 5, keep=0.5)
    with pytest.raises(ValueError, match="an ONNX teacher cannot be cut"):
        cut_from_teacher(OnnxTeacher.__new__(OnnxTeacher), X, 5, keep=0.5)


@pytest.mark.parametrize("with_loss", [True, False])
def test_depth_drops_the_least_important_residual_blocks_and_replays(with_loss):
    from edgekd.models.shrink import droppable

    net, _ = build_student(TimmSpec(model="efficientnet_lite0"), 3, 5, [0.0] * 3, [1.0] * 3, pretrained=False)
    net.eval()
    names = droppable(net, X)
    # the blocks that add their input to their output, and only those
    assert names and all(net.get_submodule(n).has_skip for n in names)
    assert len(names) == sum(getattr(m, "has_skip", False) for m in net.modules())
    fresh, student = copy.deepcopy(net), copy.deepcopy(net)
    y = torch.tensor([0, 1, 2, 3])
    plan = shrink(student, X, keep=0.5, drop_share=0.5,
                  loss=(lambda logits: nn.functional.cross_entropy(logits, y)) if with_loss else None)
    assert plan.depth_importance == ("loss" if with_loss else "cosine")
    assert len(plan.drop) == round(0.5 * len(names)) and set(plan.drop) <= set(names)
    assert all(isinstance(student.get_submodule(n), nn.Identity) for n in plan.drop)
    rebuilt = replay(fresh, ShrinkPlan.model_validate_json(plan.model_dump_json()), X)
    rebuilt.load_state_dict(student.state_dict())
    assert torch.allclose(rebuilt(X), student(X), atol=1e-5)
    # depth alone: no channel cut
    only_depth = copy.deepcopy(net)
    p = shrink(only_depth, X, keep=1.0, drop_share=0.25)
    assert not p.cuts and p.drop and params(only_depth) < params(net)


def test_a_plan_that_drops_a_block_the_model_lacks_is_refused():
    other = build_model(ArchSpec(width=0.5, depth=1), 3, 5)
    with pytest.raises(ValueError, match="drops blocks.1.1, which this model does not have"):
        replay(other, ShrinkPlan(keep=0.5, drop=["blocks.1.1"]), X)


def test_a_student_cut_in_depth_and_width_checkpoints_and_rebuilds(tmp_path):
    from edgekd.models.io import load_checkpoint, save_checkpoint
    from edgekd.models.shrink import cut_from_teacher

    teacher, _ = build_student(TimmSpec(model="mobilenetv3_small_050"), 3, 5, [0.0] * 3, [1.0] * 3, pretrained=False)
    student = cut_from_teacher(teacher.eval(), X, 5, keep=0.5, drop=0.5)
    assert student.source["plan"]["drop"] and student.name == "from-teacher:k0.5-d0.5-magnitude"
    path = tmp_path / "s.pt"
    save_checkpoint(path, student, classes=list("abcde"), bands=["R", "G", "B"], image_size=32, dataset="t",
                    role="student")
    loaded, _ = load_checkpoint(path)
    assert torch.allclose(loaded(X), student.eval()(X), atol=1e-5)


@pytest.mark.parametrize("encoder", ["edgenet", "timm"])
def test_a_segmenter_is_cut_in_encoder_and_decoder_and_keeps_its_classes(encoder, tmp_path):
    from edgekd.models.io import load_checkpoint, save_checkpoint
    from edgekd.models.shrink import cut_from_teacher
    from edgekd.tasks import get_task

    spec = ArchSpec(width=1.0, depth=2) if encoder == "edgenet" else TimmSpec(model="efficientnet_lite0")
    teacher, _ = build_student(spec, 3, 6, [0.0] * 3, [1.0] * 3, pretrained=False, task="segmentation")
    x, masks = torch.rand(4, 3, 64, 64), torch.randint(0, 6, (4, 64, 64))
    student = cut_from_teacher(teacher.eval(), x, 6, keep=0.5, importance="taylor", drop=0.25,
                               loss=lambda logits: get_task("segmentation").loss(logits, masks))
    student.eval()
    out, ref = student(x), teacher(x)
    assert out.shape == ref.shape  # every class, at the teacher's output stride
    assert params(student) < 0.5 * params(teacher)
    _, stages, _ = student.forward_features(x)  # the encoder's stages, for feature terms
    assert len(stages) == len(teacher.forward_features(x)[1])
    path = tmp_path / "seg.pt"
    save_checkpoint(path, student, classes=list("abcdef"), bands=["R", "G", "B"], image_size=64, dataset="t",
                    role="student")
    loaded, _ = load_checkpoint(path)
    assert torch.allclose(loaded(x), out, atol=1e-5)
