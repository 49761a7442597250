"""Feature KD between any two models by module name (feature_pairs STUDENT=TEACHER): the named
modules' outputs are read by hooks, names are checked with a clear error, and a student learns
to match a teacher of another family through them."""

import pytest
import torch
from torch import nn

from edgekd.config import Overrides, build_config
from edgekd.distill.teacher import LiveTeacher, TeacherOutputs
from edgekd.distill.trainer import train
from edgekd.errors import ConfigError
from edgekd.models.arch import ArchSpec, expand_students, parse_students
from edgekd.models.family import build_model
from edgekd.models.sources import SourceRequest, load_model
from edgekd.models.taps import tapped_channels, tapped_features

X = torch.rand(4, 3, 32, 32)


def _timm(name: str = "mobilenetv3_small_050") -> nn.Module:
    return load_model(f"timm:{name}", SourceRequest(in_channels=3, num_classes=3, data_mean=[0.5] * 3,
                                                     data_std=[0.25] * 3)).model.eval()


def _edgenet() -> nn.Module:
    return build_model(ArchSpec(width=0.5, depth=1), 3, 3, [0.5] * 3, [0.25] * 3)


def test_names_are_read_with_or_without_the_wrappers_prefix():
    net = _timm()
    logits, feats, emb = tapped_features(net, X, ["blocks.1", "inner.blocks.3"])
    assert logits.shape == (4, 3) and [f.dim() for f in feats] == [4, 4]
    assert tapped_channels(net, ["blocks.1", "inner.blocks.3"], 3, 32) == [f.shape[1] for f in feats]
    assert emb.shape == (4, feats[-1].shape[1])


def test_transformer_tokens_become_a_one_row_map():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            tokens = self.embed(x.flatten(2).transpose(1, 2))  # (N, L, C)
            return self.head(tokens.mean(1))

    (f,) = tapped_features(Tokens(), X, ["embed"])[1]
    assert f.shape == (4, 8, 1, 32 * 32)


def test_unknown_unused_and_flat_modules_are_refused_by_name():
    net = _edgenet()
    with pytest.raises(ConfigError, match=r"the student has no module 'stages.1'; did you mean 'stem.1'\?"):
        tapped_channels(net, ["stages.1"], 3, 32, "student")

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.used(x).mean((2, 3))

    with pytest.raises(ConfigError, match="'spare' did not run in the forward pass"):
        tapped_channels(Unused(), ["spare"], 3, 8)
    with pytest.raises(ConfigError, match="'classifier' gives a 2-d output"):
        tapped_channels(net, ["classifier"], 3, 32)
    with pytest.raises(ConfigError, match="a TorchScript model does not run"):
        tapped_channels(torch.jit.script(Unused()), ["used"], 3, 8)


def test_a_student_learns_a_teacher_of_another_family_through_named_modules(tmp_path):
    torch.manual_seed(0)
    teacher, student = _timm(), _edgenet()
    t_mods, s_mods = ["blocks.1", "blocks.3"], ["features.0", "features.2"]
    y = torch.randint(0, 3, (32,))
    x = torch.rand(32, 3, 32, 32)
    cached = TeacherOutputs.build(tmp_path, [teacher], x, features=True, modules=t_mods)
    live = LiveTeacher([teacher], features=True, modules=t_mods)
    idx = torch.arange(4)
    for a, b in zip(cached.batch(idx, 0, x[:4]).feats, live.batch(idx, 0, x[:4]).feats):
        torch.testing.assert_close(a, b)
    hist = train(student, x, y, epochs=6, batch_size=8, lr=3e-3, seed=0, teacher=cached, terms=[("feature", 1.0)],
                 teacher_channels=tapped_channels(teacher, t_mods, 3, 32), student_modules=s_mods)
    assert hist.epoch_loss[-1] < 0.8 * hist.epoch_loss[0]  # the hint loss through the named maps goes down


def test_feature_pairs_flag_gives_indices_or_module_names():
    assert build_config(Overrides(feature_pairs="0=1, 1=2")).stage_pairs == [(0, 1), (1, 2)]
    cfg = build_config(Overrides(feature_pairs="features.2=layer3"))
    assert cfg.feature_modules == (["features.2"], ["layer3"]) and cfg.stage_pairs is None
    with pytest.raises(ValueError, match="'features.2' is not STUDENT=TEACHER"):
        Overrides(feature_pairs="features.2")


def test_student_families_expand_to_their_timm_models():
    assert expand_students(["edgenet", "efficientnet-lite", "timm:efficientnet_lite0"]) == [
        "edgenet", "timm:efficientnet_lite0", "timm:efficientnet_lite1", "timm:efficientnet_lite2"]
    edgenet, specs = parse_students(["mobilenetv3"])
    assert not edgenet and [s.model for s in specs][:2] == ["mobilenetv3_small_050", "mobilenetv3_small_075"]
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        expand_students(["resnet-18"])
