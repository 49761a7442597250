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
