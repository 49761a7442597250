import numpy as np
import pytest

from edgekd.export.parity import ParityTolerance, compare_logits


def test_parity_figures_by_hand():
    ref = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    got = np.array([[2.0, 1.5], [0.0, 2.9], [0.4, 0.6], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    p = compare_logits(ref, got, labels)
    assert p.top1_agreement == 0.75
    assert p.accuracy_torch == 0.75 and p.accuracy_export == 1.0 and p.accuracy_delta == 0.25
    assert p.max_abs_diff == pytest.approx(0.6)
    assert p.mean_abs_diff == pytest.approx((0.5 + 0.1 + 0.6 + 0.6) / 8)
    problems = p.violations(ParityTolerance(max_abs_diff=1e-3, min_top1_agreement=0.99))
    assert len(problems) == 2 and "0.6" in problems[0] and "0.7500" in problems[1]
    assert p.violations(ParityTolerance(max_abs_diff=1.0, min_top1_agreement=0.5)) == []
