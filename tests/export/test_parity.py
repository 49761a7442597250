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
    problems = p.violations(ParityTolerance(max_abs_diff=1e-3, min_top1_agreement=0.99, flip_images=0))
    assert len(problems) == 2 and "0.6" in problems[0] and "0.7500" in problems[1]
    assert p.violations(ParityTolerance(max_abs_diff=1.0, min_top1_agreement=0.5)) == []


def _flipped(n: int, flips: int, wrong_by: float = 0.01):
    """n images the reference gets right; `flips` of them flipped by a logit change of `wrong_by`."""
    ref = np.tile([[1.0, 1.0 - wrong_by / 2]], (n, 1))
    got = ref.copy()
    got[:flips, 1] += wrong_by  # now class 1 wins on those
    return compare_logits(ref, got, np.zeros(n, dtype=np.int64))


def test_a_single_flip_on_a_small_split_does_not_fail_fp16():
    fp16 = ParityTolerance(max_abs_diff=0.5, min_top1_agreement=0.97, max_accuracy_drop=0.01)
    one = _flipped(84, 1)  # 1.19 points of 84 images: over the 1-point limit by one image
    assert one.accuracy_delta < -0.01 and one.violations(fp16) == []
    assert one.violations(fp16.model_copy(update={"flip_images": 0}))  # the old rule failed it
    many = _flipped(84, 4)  # a real disagreement still fails, naming the image allowance
    problems = many.violations(fp16)
    assert any("accuracy drop 0.0476 > allowed 0.0119 (max of 0.0100 and 1 of 84 images)" in p for p in problems)
    far = _flipped(84, 1, wrong_by=2.0)  # one flip whose logits disagree beyond the limit fails
    assert any("max |logit difference|" in p for p in far.violations(fp16))
    big = _flipped(10000, 2)  # on a large split the limits are the tolerances themselves
    assert big.violations(fp16) == []
    assert _flipped(10000, 200).violations(fp16)
