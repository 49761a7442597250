import math

import pytest
import torch

from edgekd.distill.losses import KD_LOSSES, response_kd_loss


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_response_loss_matches_hand_computed_value():
    s, t, y = [2.0, 0.0, -1.0], [1.0, 1.0, 0.0], 0
    alpha, tau = 0.3, 2.0
    ce = -math.log(_softmax(s)[y])
    ps, pt = _softmax([v / tau for v in s]), _softmax([v / tau for v in t])
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    expected = alpha * ce + (1 - alpha) * tau**2 * kl
    got = response_kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), alpha=alpha, temperature=tau)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_response_loss_is_pure_cross_entropy_at_alpha_one_and_zero_kl_for_equal_logits():
    z = torch.tensor([[0.5, -0.2, 1.0], [0.1, 0.2, 0.3]])
    y = torch.tensor([2, 0])
    ce = torch.nn.functional.cross_entropy(z, y)
    assert float(response_kd_loss(z, z * 3, y, alpha=1.0, temperature=4.0)) == pytest.approx(float(ce))
    assert float(response_kd_loss(z, z, y, alpha=0.0, temperature=4.0)) == pytest.approx(0.0, abs=1e-7)


def test_registry_finds_response_and_names_the_choices_for_unknown():
    assert KD_LOSSES.get("response") is response_kd_loss
    with pytest.raises(Exception, match="choose one of: response"):
        KD_LOSSES.get("nope")
