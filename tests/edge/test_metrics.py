"""UF1 / UAR / accuracy as MEGC 2019 defines them, on pooled predictions."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mer.metrics import confusion, scores


def test_perfect_and_worst() -> None:
    assert scores([0, 1, 2], [0, 1, 2], 3) == {"uf1": 1.0, "uar": 1.0, "accuracy": 1.0}
    assert scores([0, 0, 1], [1, 1, 0], 2)["uf1"] == 0.0


def test_hand_computed_example() -> None:
    truth = [0, 0, 0, 0, 1, 1, 2]
    pred = [0, 0, 0, 1, 1, 2, 2]
    s = scores(truth, pred, 3)
    # class 0: TP3 FP0 FN1 -> F1 6/7, R 3/4; class 1: TP1 FP1 FN1 -> 1/2, R 1/2;
    # class 2: TP1 FP1 FN0 -> 2/3, R 1
    assert s["uf1"] == pytest.approx((6 / 7 + 1 / 2 + 2 / 3) / 3)
    assert s["uar"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert s["accuracy"] == pytest.approx(5 / 7)


def test_unweighted_differs_from_accuracy_on_imbalance() -> None:
    truth = [0] * 9 + [1]
    pred = [0] * 10
    s = scores(truth, pred, 2)
    assert s["accuracy"] == 0.9 and s["uar"] == 0.5


def test_absent_classes_are_left_out() -> None:
    assert scores([0, 1], [0, 1], 4)["uf1"] == 1.0


def test_confusion_rows_are_truth() -> None:
    m = confusion([0, 1, 1], [1, 1, 0], 2)
    assert m.tolist() == [[0, 1], [1, 1]]
    assert m.dtype == np.int64


def test_bad_lengths() -> None:
    with pytest.raises(ValueError):
        scores([0, 1], [0], 2)
