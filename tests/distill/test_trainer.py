import pytest
import torch
from torch import nn

from edgekd.distill.trainer import cached_targets, evaluate, live_targets, predict_logits, recalibrate_batchnorm, train
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model


def test_bn_recalibration_estimates_whole_data_statistics_from_sorted_data():
    # two "classes" stored one after the other, as data sets are
    x = torch.cat([torch.full((200, 1, 2, 2), -3.0), torch.full((200, 1, 2, 2), 5.0)])
    x += 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    bn = nn.BatchNorm2d(1)
    model = nn.Sequential(bn)
    recalibrate_batchnorm(model, x, batch_size=50)
    assert abs(float(bn.running_mean) - float(x.mean())) < 0.3
    assert abs(float(bn.running_var) / float(x.var()) - 1) < 0.1  # sorted batches would give ~0.0006
    assert bn.momentum == 0.1  # restored


def test_bn_recalibration_leaves_layers_its_forward_does_not_reach():
    """A model's own calibration forward (torchvision's detectors: backbone and dense head only)
    re-estimates the layers it runs; a layer it skips keeps the statistics training gave it."""
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.run, self.skipped = nn.BatchNorm2d(1), nn.BatchNorm2d(1)

        def forward(self, x):
            return self.skipped(self.run(x))

        def calibration_forward(self, x):
            self.run(x)

    model = Two()
    model.skipped.running_mean.fill_(7.0)
    x = torch.full((40, 1, 2, 2), 2.0)
    recalibrate_batchnorm(model, x, batch_size=20)
    assert float(model.run.running_mean) == 2.0 and float(model.skipped.running_mean) == 7.0


def test_a_model_with_its_own_loss_is_not_given_a_history_term():
    from edgekd.distill.trainer import History

    class Own(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def own_loss(self, x, y):
            return (self.w - 1).pow(2).sum()

    x, y = torch.rand(4, 1, 2, 2), torch.zeros(4)
    model = Own()
    train(model, x, y, epochs=3, batch_size=2, lr=0.1, seed=0)  # its own loss is what it minimises
    assert float(model.w) > 0.1
    with pytest.raises(ValueError, match="history term"):
        train(model, x, y, epochs=1, batch_size=2, lr=0.1, seed=0, history=History(torch.zeros(4, 2), 1.0))


def test_kd_training_learns_and_cached_equals_live_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 3, 8, 8, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > x[:, 1].mean(dim=(1, 2))).long()  # learnable from the pixels
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(width=0.25, depth=1), 3, 2)
    train(teacher, x, y, epochs=15, batch_size=32, lr=1e-2, seed=0)
    t_logits = predict_logits(teacher, x)
    assert evaluate(t_logits, y)["accuracy"] > 0.8
    students = []
    for targets in (cached_targets(t_logits), live_targets(teacher)):
        torch.manual_seed(1)
        s = build_model(ArchSpec(width=0.25, depth=1), 3, 2)
        hist = train(s, x, y, epochs=3, batch_size=32, lr=1e-2, seed=0, teacher=targets)
        students.append((s, hist))
    # the cached path gives the same training as running the teacher on every batch
    assert students[0][1].epoch_loss == pytest_approx(students[1][1].epoch_loss)
    assert hist.epoch_loss[-1] < hist.epoch_loss[0]


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-4)


def test_augmentations_are_label_preserving_draws_per_image():
    from edgekd.distill.teacher import apply_view
    from edgekd.distill.trainer import augment

    x = torch.arange(4 * 2 * 6 * 6, dtype=torch.float32).reshape(4, 2, 6, 6)
    dihedral = [apply_view(x, v) for v in range(8)]
    g = torch.Generator().manual_seed(0)
    for kinds in (("flip",), ("flip", "rot90")):
        out = augment(x, g, kinds)
        assert out.shape == x.shape
        for i in range(4):  # every image is one of its own 8 symmetries, drawn independently
            assert any(torch.equal(out[i], d[i]) for d in dihedral)
    cropped = augment(x, torch.Generator().manual_seed(1), ("crop",))
    assert cropped.shape == x.shape
    assert float(cropped.min()) >= float(x.min()) and float(cropped.max()) <= float(x.max())
    same = augment(x, torch.Generator().manual_seed(1), ("crop",))
    assert torch.equal(cropped, same)  # seeded: a resumed run draws the same
    assert torch.equal(augment(x, g, ()), x)


def test_ld_training_pulls_the_students_sides_toward_the_teachers_cached_as_live(tmp_path):
    """--kd ld with GFL-style heads: the teacher's side distributions cached beside its rows (or
    read live) train the student alike, and LD alone brings the student's distributions to the
    teacher's on the locations it weighs."""
    from edgekd.distill.detection import kd_weights, ld_loss
    from edgekd.distill.teacher import LiveTeacher, TeacherOutputs
    from edgekd.models.detnet import capturing_edges
    from edgekd.models.sources import build_student
    from edgekd.tasks.detection import DetectionTask

    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 64, 64, generator=g)
    y = torch.tensor([[[0.0, 8.0, 8.0, 40.0, 24.0]], [[1.0, 20.0, 30.0, 60.0, 50.0]]]).repeat(8, 1, 1)
    torch.manual_seed(0)
    teacher = build_student(ArchSpec(width=0.5), 3, 2, [0.5] * 3, [0.25] * 3, task="detection", det_head="gfl")[0]
    with torch.no_grad():  # a teacher whose sides are sure of something: sharper distributions than at init
        teacher.inner.head.box.weight.mul_(50.0)  # type: ignore[union-attr,operator]
    cached = TeacherOutputs.build(tmp_path, [teacher], x, edges=True)
    assert cached.edges is not None and cached.edges.shape[-2:] == (4, 17)
    assert TeacherOutputs.build(tmp_path, [teacher], x).edges is None  # its own cache entry

    def gap(student: torch.nn.Module) -> float:
        student.eval()
        with torch.no_grad(), capturing_edges(student) as s_cap, capturing_edges(teacher) as t_cap:
            student(x)
            t_rows = teacher.eval()(x)
            return float(ld_loss(s_cap.edges(), t_cap.edges(), kd_weights(t_rows, y), 1.0))

    losses = []
    for source in (cached, LiveTeacher([teacher], edges=True)):
        torch.manual_seed(1)
        student = build_student(ArchSpec(width=0.25), 3, 2, [0.5] * 3, [0.25] * 3, task="detection",
                                det_head="gfl")[0]
        before = gap(student)
        hist = train(student, x, y, epochs=4, batch_size=8, lr=1e-2, seed=0, teacher=source, terms=[("ld", 1.0)],
                     task=DetectionTask())
        assert gap(student) < 0.5 * before
        losses.append(hist.epoch_loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-2)  # float16 cache against the live float32
