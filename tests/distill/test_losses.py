import math

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.distill.losses import (
    KD_LOSSES,
    KDInputs,
    KDSettings,
    combined_loss,
    feature_kd_loss,
    multi_teacher_kd_loss,
    parse_kd,
    relation_kd_loss,
    response_kd_loss,
    robust_kd_loss,
    robust_weights,
    soft_kl,
)
from edgekd.errors import ConfigError


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def _ce(logits, y):
    return -math.log(_softmax(logits)[y])


def _kl(t, s, tau):
    pt, ps = _softmax([v / tau for v in t]), _softmax([v / tau for v in s])
    return tau**2 * sum(p * math.log(p / q) for p, q in zip(pt, ps))


S, T, Y = [2.0, 0.0, -1.0], [1.0, 1.0, 0.0], 0


def test_response_loss_matches_hand_computed_value():
    alpha, tau = 0.3, 2.0
    expected = alpha * _ce(S, Y) + (1 - alpha) * _kl(T, S, tau)
    got = response_kd_loss(torch.tensor([S]), torch.tensor([T]), torch.tensor([Y]), alpha=alpha, temperature=tau)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(soft_kl(torch.tensor([S]), torch.tensor([T]), tau)) == pytest.approx(_kl(T, S, tau), rel=1e-6)


def test_response_loss_is_pure_cross_entropy_at_alpha_one_and_zero_kl_for_equal_logits():
    z = torch.tensor([[0.5, -0.2, 1.0], [0.1, 0.2, 0.3]])
    y = torch.tensor([2, 0])
    ce = torch.nn.functional.cross_entropy(z, y)
    assert float(response_kd_loss(z, z * 3, y, alpha=1.0, temperature=4.0)) == pytest.approx(float(ce))
    assert float(response_kd_loss(z, z, y, alpha=0.0, temperature=4.0)) == pytest.approx(0.0, abs=1e-7)


def test_multi_teacher_is_the_weighted_mean_of_response_losses():
    t2 = [0.0, 3.0, 0.0]
    expected = 0.25 * (0.5 * _ce(S, Y) + 0.5 * _kl(T, S, 2.0)) + 0.75 * (0.5 * _ce(S, Y) + 0.5 * _kl(t2, S, 2.0))
    got = multi_teacher_kd_loss(torch.tensor([S]), [torch.tensor([T]), torch.tensor([t2])], torch.tensor([Y]),
                                [1.0, 3.0], alpha=0.5, temperature=2.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_robust_weights_and_loss_by_hand():
    # teacher: label 0 has probability softmax([1,1,0])[0] = e/(2e+1) = 0.4223; label 2 has 0.1554
    t = torch.tensor([T, T])
    y = torch.tensor([0, 2])
    p0, p2 = _softmax(T)[0], _softmax(T)[2]
    w = robust_weights(t, y, rho=0.5)
    assert w.tolist() == pytest.approx([p0 / 0.5, p2 / 0.5], rel=1e-6)
    assert float(robust_weights(t, y, rho=0.1)[0]) == 1.0  # plausible labels keep full weight
    s = torch.tensor([S, S])
    expected = 0.5 * (w[0].item() * _ce(S, 0) + w[1].item() * _ce(S, 2)) / 2 + 0.5 * _kl(T, S, 2.0)
    assert float(robust_kd_loss(s, t, y, alpha=0.5, temperature=2.0, rho=0.5)) == pytest.approx(expected, rel=1e-6)


def test_feature_loss_by_hand():
    adapter = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(adapter.weight, 2.0)
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # adapted: [[2, 4], [6, 8]]
    t = torch.tensor([[[[2.0, 4.0], [6.0, 9.0]]]])
    adapters = nn.ModuleList([adapter])
    assert float(feature_kd_loss([s], [t], adapters)) == pytest.approx(0.25)  # (0+0+0+1)/4
    # a smaller teacher map: the adapted student map is resized (bilinear, centre = mean) first
    t_small = torch.tensor([[[[5.0]]]])
    assert float(feature_kd_loss([s], [t_small], adapters)) == pytest.approx(0.0, abs=1e-9)
    two = feature_kd_loss([s, s], [t, t], nn.ModuleList([adapter, adapter]), weights=[1, 3])
    assert float(two) == pytest.approx(1.0)
    assert float(feature_kd_loss([s], [t * 7], adapters, distance="cosine")) == pytest.approx(0.0, abs=1e-6)


def _rkd_numpy(s, t):
    def dist(e):
        d = np.linalg.norm(e[:, None] - e[None], axis=2)
        return d / d[d > 0].mean()

    def ang(e):
        diff = e[None, :, :] - e[:, None, :]
        n = np.linalg.norm(diff, axis=2, keepdims=True)
        u = np.divide(diff, np.maximum(n, 1e-12))
        return np.einsum("ijd,ikd->ijk", u, u)

    def huber(a, b):
        x = np.abs(a - b)
        return np.where(x < 1, 0.5 * x**2, x - 0.5).mean()

    return huber(dist(s), dist(t)) + 2 * huber(ang(s), ang(t))


def test_relation_loss_by_hand():
    t = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert float(relation_kd_loss(torch.tensor(t * 3), torch.tensor(t))) == pytest.approx(0.0, abs=1e-9)  # scale-free
    s = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert float(relation_kd_loss(torch.tensor(s), torch.tensor(t))) == pytest.approx(_rkd_numpy(s, t), rel=1e-6)


def test_semi_supervised_term_mixes_labelled_and_unlabelled():
    b = KDInputs(student_logits=torch.tensor([S]), labels=torch.tensor([Y]), teacher_logits=[torch.tensor([T])],
                 unlabeled_student_logits=torch.tensor([[0.0, 1.0, 0.0]]), unlabeled_teacher_logits=torch.tensor([S]))
    st = KDSettings(alpha=0.5, temperature=2.0, semi_alpha=0.75)
    expected = 0.75 * (0.5 * _ce(S, Y) + 0.5 * _kl(T, S, 2.0)) + 0.25 * _kl(S, [0.0, 1.0, 0.0], 2.0)
    assert float(KD_LOSSES.get("semi-supervised")(b, st)) == pytest.approx(expected, rel=1e-6)


def test_parse_and_combine():
    assert parse_kd("response:1,relation:0.5") == [("response", 1.0), ("relation", 0.5)]
    assert parse_kd("response") == [("response", 1.0)]
    with pytest.raises(ConfigError, match="choose one of"):
        parse_kd("attention")
    with pytest.raises(ConfigError, match="not a number"):
        parse_kd("response:x")
    b = KDInputs(student_logits=torch.tensor([S]), labels=torch.tensor([Y]), teacher_logits=[torch.tensor([T])])
    st = KDSettings(alpha=0.5, temperature=2.0)
    one = float(KD_LOSSES.get("response")(b, st))
    assert float(combined_loss([("response", 2.0), ("robust", 1.0)], b, st)) == pytest.approx(
        2 * one + float(robust_kd_loss(b.student_logits, b.teacher_logits[0], b.labels, alpha=0.5, temperature=2.0)))


# -- dynamic weighting and feature-importance preservation, against values computed by hand ------------


def test_entropy_weights_favour_the_samples_the_teacher_finds_hard():
    from edgekd.distill.losses import sample_weights

    teacher = torch.tensor([[0.0, 0.0], [100.0, 0.0]])  # H = ln 2, and ~0
    w = sample_weights(torch.zeros(2, 2), teacher, "entropy")
    assert torch.allclose(w, torch.tensor([2.0, 0.0]), atol=1e-6) and w.mean() == pytest.approx(1.0)


def test_disagreement_weights_are_the_total_variation_distance_normalised():
    from edgekd.distill.losses import sample_weights

    teacher = torch.tensor([[100.0, 0.0], [0.0, 0.0]])  # p_T = (1, 0) and (.5, .5)
    student = torch.zeros(2, 2)  # p_S = (.5, .5): TV = 0.5 and 0
    assert torch.allclose(sample_weights(student, teacher, "disagreement"), torch.tensor([2.0, 0.0]), atol=1e-6)
    assert torch.equal(sample_weights(student, student, "disagreement"), torch.ones(2))  # all zero: weight 1
    assert sample_weights(student, teacher, "none") is None


def test_weighted_response_loss_is_the_hand_formula():
    from edgekd.distill.losses import response_kd_loss, sample_weights

    torch.manual_seed(0)
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    w = sample_weights(s, t, "entropy")
    p_t = torch.softmax(t / 2, 1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / 2, 1))).sum(1)
    expected = 0.3 * torch.nn.functional.cross_entropy(s, y) + 0.7 * 4 * (w * kl).mean()
    got = response_kd_loss(s, t, y, alpha=0.3, temperature=2.0, weighting="entropy")
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    plain = response_kd_loss(s, t, y, alpha=0.3, temperature=2.0)
    assert float(plain) == pytest.approx(float(0.3 * torch.nn.functional.cross_entropy(s, y) + 0.7 * 4 * kl.mean()),
                                         rel=1e-5)


def test_l1_feature_term_and_the_teachers_attention_mask_by_hand():
    from edgekd.distill.losses import feature_kd_loss

    identity = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        identity.weight.fill_(1.0)
    adapters = nn.ModuleList([identity])
    s = torch.zeros(1, 1, 2, 2)
    t = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(feature_kd_loss([s], [t], adapters, distance="l1")) == pytest.approx(0.25)  # mean |0 - t|
    # attention map of t: t^2 averaged over channels, normalised to mean 1 -> [[4, 0], [0, 0]]
    assert float(feature_kd_loss([s], [t], adapters, distance="l1", importance="attention")) == pytest.approx(1.0)
    assert float(feature_kd_loss([s], [t], adapters, distance="mse", importance="attention")) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="feature importance must be none, attention or boxes"):
        feature_kd_loss([s], [t], adapters, importance="saliency")
