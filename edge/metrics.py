"""The field's recognition metrics (MEGC 2019), on pooled predictions joined by sample id.

- UF1 = mean over classes c of 2TP_c / (2TP_c + FP_c + FN_c)   (unweighted F1)
- UAR = mean over classes c of TP_c / N_c                         (unweighted average recall)
- WAR = correct / all                                             (accuracy)

**Which classes are averaged:** the classes present in the ground truth of the predictions
being scored. A class nobody has (N_c = 0) has no recall, and MEGC's UF1 is averaged over
the classes of the ground truth, so it is left out of both means; a prediction of such a
class still counts, as a false negative of the sample's true class. This equals
scikit-learn's ``f1_score(y, p, labels=<classes in y>, average="macro")`` and
``balanced_accuracy_score(y, p)`` (the tests check it on random cases). On the pooled
predictions of a whole protocol every class is present; the rule matters for slices (one
dataset, one subject). No variants: not ELRCN's harmonic mean of macro precision and
recall, not means of per-subject scores, not means over folds.

:func:`pooled_scores` joins predictions to labels **by sample id**, never by position: a
prediction for an unknown id, a duplicate id (in either), or a sample without a prediction
is an :class:`~edge_mer.errors.InputError`. Sample ids are ``dataset/subject/clip``, so the
report also slices per dataset and (a secondary figure, labelled so) per subject.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from edge_mer.errors import InputError

__all__ = ["PER_SUBJECT_NOTE", "confusion", "pooled_scores", "scores"]

PER_SUBJECT_NOTE = (
    "secondary figure: scores of each subject's own predictions; the protocol's result is "
    "the pooled score, not a mean of these"
)


def confusion(truth: Sequence[int], pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` int64 counts: rows = truth, columns = prediction."""
    t = np.asarray(truth, dtype=np.int64)
    p = np.asarray(pred, dtype=np.int64)
    for name, v in (("truth", t), ("pred", p)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise InputError(f"{name} holds class indices outside 0..{n_classes - 1}")
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def _from_matrix(m: np.ndarray) -> dict[str, float]:
    tp = np.diag(m).astype(float)
    n_true = m.sum(1).astype(float)
    n_pred = m.sum(0).astype(float)
    present = n_true > 0
    f1 = 2 * tp[present] / (n_true[present] + n_pred[present])
    recall = tp[present] / n_true[present]
    war = float(tp.sum() / m.sum())
    return {"uf1": float(f1.mean()), "uar": float(recall.mean()), "war": war, "accuracy": war}


def scores(truth: Sequence[int], pred: Sequence[int], n_classes: int) -> dict[str, float]:
    """UF1, UAR and WAR (also under its old name ``accuracy``) of pooled class indices,
    averaged over the classes present in ``truth`` (see the module doc)."""
    if len(truth) != len(pred) or not len(truth):
        raise ValueError("truth and pred must be non-empty and of equal length")
    return _from_matrix(confusion(truth, pred, n_classes))


def _pairs(items: Iterable[tuple[str, Hashable]], what: str) -> dict[str, Hashable]:
    out: dict[str, Hashable] = {}
    for sid, value in items:
        if sid in out:
            raise InputError(f"sample {sid!r} appears twice in the {what}: one row per sample")
        out[sid] = value
    return out


def _split_id(sid: str) -> tuple[str, str]:
    parts = str(sid).split("/")
    if len(parts) < 3 or not all(parts):
        raise InputError(f"sample id {sid!r} is not dataset/subject/clip")
    return parts[0], f"{parts[0]}/{parts[1]}"


def _block(ids: list[str], truth: dict, pred: dict, index: dict) -> dict[str, Any]:
    t = [index[truth[i]] for i in ids]
    p = [index[pred[i]] for i in ids]
    m = confusion(t, p, len(index))
    return {"n": len(ids), **_from_matrix(m), "confusion": m.tolist()}


def pooled_scores(
    labels: Iterable[tuple[str, Hashable]],
    predictions: Iterable[tuple[str, Hashable]],
    classes: Sequence[Hashable],
) -> dict[str, Any]:
    """Score pooled predictions against labels, joined by sample id.

    ``labels`` and ``predictions`` are ``(sample_id, class)`` pairs (ids
    ``dataset/subject/clip``); ``classes`` fixes the order of the confusion matrix (rows =
    truth, columns = prediction). Returns::

        {"classes": [...], "n": N, "uf1", "uar", "war", "accuracy", "confusion": [[...]],
         "per_dataset": {dataset: {n, uf1, uar, war, accuracy, confusion}},
         "per_subject": {"note": PER_SUBJECT_NOTE,
                         "rows": [{"subject": "casme2/01", n, uf1, uar, war, accuracy}]}}

    Raises :class:`InputError` for a duplicate id, a prediction of an unknown sample, a
    sample without a prediction, a class outside ``classes``, or no samples at all.
    """
    truth = _pairs(labels, "labels")
    pred = _pairs(predictions, "predictions")
    classes = list(classes)
    if len(set(classes)) != len(classes) or not classes:
        raise InputError(f"classes {classes!r} must be unique and non-empty")
    if not truth:
        raise InputError("no labelled samples to score")
    unknown = [i for i in pred if i not in truth]
    if unknown:
        raise InputError(
            f"{len(unknown)} prediction(s) for samples without a label, e.g. {unknown[0]!r}: "
            "predictions are joined to labels by sample id"
        )
    lacking = [i for i in truth if i not in pred]
    if lacking:
        raise InputError(
            f"{len(lacking)} labelled sample(s) have no prediction, e.g. {lacking[0]!r}: "
            "every sample of the protocol must be predicted once"
        )
    index = {c: k for k, c in enumerate(classes)}
    for what, mapping in (("label", truth), ("prediction", pred)):
        bad = next((i for i, c in mapping.items() if c not in index), None)
        if bad is not None:
            raise InputError(
                f"{what} {mapping[bad]!r} of sample {bad!r} is not one of the classes {classes}"
            )
    ids = list(truth)
    report: dict[str, Any] = {"classes": classes, **_block(ids, truth, pred, index)}
    datasets: dict[str, list[str]] = {}
    subjects: dict[str, list[str]] = {}
    for sid in ids:
        dataset, subject = _split_id(sid)
        datasets.setdefault(dataset, []).append(sid)
        subjects.setdefault(subject, []).append(sid)
    report["per_dataset"] = {d: _block(v, truth, pred, index) for d, v in datasets.items()}
    rows = []
    for subject, v in subjects.items():
        block = _block(v, truth, pred, index)
        del block["confusion"]
        rows.append({"subject": subject, **block})
    report["per_subject"] = {"note": PER_SUBJECT_NOTE, "rows": rows}
    return report
