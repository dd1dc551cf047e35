"""The field's recognition metrics (MEGC 2019), on pooled predictions.

UF1 = mean over classes of 2TP / (2TP + FP + FN); UAR = mean over classes of TP / N_c.
Classes absent from both truth and prediction are left out of the means. No variants:
not ELRCN's harmonic mean of macro precision and recall, not per-subject averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(truth: Sequence[int], pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts, rows = truth, columns = prediction."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(truth, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m


def scores(truth: Sequence[int], pred: Sequence[int], n_classes: int) -> dict[str, float]:
    """UF1, UAR and accuracy (WAR) of pooled predictions."""
    if len(truth) != len(pred) or not len(truth):
        raise ValueError("truth and pred must be non-empty and of equal length")
    m = confusion(truth, pred, n_classes)
    tp = np.diag(m).astype(float)
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    present = (m.sum(0) + m.sum(1)) > 0
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=present)
    has_truth = m.sum(1) > 0
    recall = np.divide(tp, m.sum(1), out=np.zeros_like(tp), where=has_truth)
    return {
        "uf1": float(f1[present].mean()),
        "uar": float(recall[has_truth].mean()),
        "accuracy": float(tp.sum() / m.sum()),
    }
