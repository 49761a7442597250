"""Per-class metrics against values computed by hand."""

import pytest

from edgekd.metrics import class_metrics


def test_per_class_figures_by_hand():
    # truth: 3 a, 2 b, 1 c; predictions: a a b | b b | a ; d never occurs
    truth = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 1, 0]
    m = class_metrics(pred, truth, ["a", "b", "c", "d"])
    a, b, c, d = m.classes
    assert m.confusion == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert (a.precision, a.recall, a.support) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert a.f1 == pytest.approx(2 / 3)
    assert (b.precision, b.recall) == (pytest.approx(2 / 3), 1.0) and b.f1 == pytest.approx(0.8)
    assert c.precision is None and c.recall == 0.0 and c.f1 == 0.0  # never predicted, never right
    assert d.recall is None and d.support == 0 and d.f1 is None  # absent from the split: left out of the means
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert m.n == 6 and m.split == "validation"


def test_perfect_and_empty():
    m = class_metrics([1, 0], [1, 0], ["x", "y"], split="test")
    assert m.accuracy == m.balanced_accuracy == m.macro_f1 == 1.0 and m.split == "test"
    assert class_metrics([], [], ["x"]).n == 0
