"""UF1 / UAR / WAR as MEGC 2019 defines them, on pooled predictions joined by sample id."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from edge_mer.errors import InputError
from edge_mer.metrics import PER_SUBJECT_NOTE, confusion, pooled_scores, scores


def test_perfect_and_worst() -> None:
    assert scores([0, 1, 2], [0, 1, 2], 3) == {"uf1": 1.0, "uar": 1.0, "war": 1.0, "accuracy": 1.0}
    assert scores([0, 0, 1], [1, 1, 0], 2)["uf1"] == 0.0


def test_hand_computed_example() -> None:
    truth = [0, 0, 0, 0, 1, 1, 2]
    pred = [0, 0, 0, 1, 1, 2, 2]
    s = scores(truth, pred, 3)
    # class 0: TP3 FP0 FN1 -> F1 6/7, R 3/4; class 1: TP1 FP1 FN1 -> 1/2, R 1/2;
    # class 2: TP1 FP1 FN0 -> 2/3, R 1
    assert s["uf1"] == pytest.approx((6 / 7 + 1 / 2 + 2 / 3) / 3)
    assert s["uar"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert s["war"] == s["accuracy"] == pytest.approx(5 / 7)


def test_unweighted_differs_from_accuracy_on_imbalance() -> None:
    truth = [0] * 9 + [1]
    pred = [0] * 10
    s = scores(truth, pred, 2)
    assert s["war"] == 0.9 and s["uar"] == 0.5


def test_classes_absent_from_the_truth_are_not_averaged() -> None:
    assert scores([0, 1], [0, 1], 4)["uf1"] == 1.0
    # class 2 is predicted but nobody has it: it is not averaged, but the wrong prediction
    # still costs class 0 a false negative.
    s = scores([0, 0, 1], [0, 2, 1], 3)
    assert s["uf1"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["uar"] == pytest.approx((1 / 2 + 1) / 2)


def test_confusion_rows_are_truth() -> None:
    m = confusion([0, 1, 1], [1, 1, 0], 2)
    assert m.tolist() == [[0, 1], [1, 1]]
    assert m.dtype == np.int64
    # one sample of truth 2 predicted 0: row 2, column 0
    assert confusion([2], [0], 3)[2, 0] == 1 and confusion([2], [0], 3)[0, 2] == 0


def test_bad_lengths_and_indices() -> None:
    with pytest.raises(ValueError):
        scores([0, 1], [0], 2)
    with pytest.raises(InputError, match=r"outside 0\.\.1"):
        scores([0, 2], [0, 1], 2)


def test_matches_scikit_learn_on_random_cases() -> None:
    """Many random cases, most with classes absent from truth or prediction."""
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(8)
    absent = 0
    for _ in range(150):
        k = rng.randint(2, 6)
        n = rng.randint(1, 40)
        used = rng.sample(range(k), rng.randint(1, k))  # truth draws from a subset
        truth = [rng.choice(used) for _ in range(n)]
        pred = [rng.randrange(k) if rng.random() < 0.6 else t for t in truth]
        absent += len(set(truth)) < k
        ours = scores(truth, pred, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
            f1 = sk.f1_score(truth, pred, labels=sorted(set(truth)), average="macro")
            uar = sk.balanced_accuracy_score(truth, pred)
        assert ours["uf1"] == pytest.approx(f1, abs=1e-12)
        assert ours["uar"] == pytest.approx(uar, abs=1e-12)
        assert ours["war"] == pytest.approx(sk.accuracy_score(truth, pred), abs=1e-12)
        assert (
            confusion(truth, pred, k).tolist()
            == sk.confusion_matrix(truth, pred, labels=list(range(k))).tolist()
        )
    assert absent > 40  # the absent-class rule was exercised


CLASSES = ["negative", "positive", "surprise"]


def _case():
    labels = [
        ("casme2/01/a", "negative"),
        ("casme2/01/b", "positive"),
        ("casme2/02/c", "surprise"),
        ("samm/006/006_1_2", "negative"),
        ("samm/007/007_1_1", "positive"),
    ]
    preds = {
        "casme2/01/a": "negative",
        "casme2/01/b": "negative",
        "casme2/02/c": "surprise",
        "samm/006/006_1_2": "positive",
        "samm/007/007_1_1": "positive",
    }
    return labels, preds


def test_pooled_scores_join_by_id_not_by_order() -> None:
    labels, preds = _case()
    forward = pooled_scores(labels, list(preds.items()), CLASSES)
    backward = pooled_scores(labels, list(reversed(preds.items())), CLASSES)
    assert forward == backward
    truth = [CLASSES.index(c) for _, c in labels]
    pred = [CLASSES.index(preds[i]) for i, _ in labels]
    expect = scores(truth, pred, 3)
    assert forward["uf1"] == pytest.approx(expect["uf1"])
    assert forward["uar"] == pytest.approx(expect["uar"])
    assert forward["n"] == 5 and forward["classes"] == CLASSES
    assert forward["confusion"] == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_pooled_scores_slices() -> None:
    labels, preds = _case()
    r = pooled_scores(labels, list(preds.items()), CLASSES)
    assert set(r["per_dataset"]) == {"casme2", "samm"}
    samm = r["per_dataset"]["samm"]
    assert samm["n"] == 2 and samm["war"] == 0.5
    # truth of samm: negative, positive -> positive has F1 2/3, negative 0; surprise absent
    assert samm["uf1"] == pytest.approx((0 + 2 / 3) / 2)
    assert r["per_subject"]["note"] == PER_SUBJECT_NOTE
    rows = {row["subject"]: row for row in r["per_subject"]["rows"]}
    assert set(rows) == {"casme2/01", "casme2/02", "samm/006", "samm/007"}
    assert rows["casme2/01"]["n"] == 2 and rows["casme2/01"]["war"] == 0.5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lab, pr: pr.append(("casme2/09/x", "negative")), "without a label"),
        (lambda lab, pr: pr.pop(), "have no prediction"),
        (lambda lab, pr: pr.append(pr[0]), "appears twice in the predictions"),
        (lambda lab, pr: lab.append(lab[0]), "appears twice in the labels"),
        (lambda lab, pr: pr.__setitem__(0, (pr[0][0], "joy")), "'joy'"),
        (
            lambda lab, pr: [x.append(("nodataset", "negative")) for x in (lab, pr)],
            "not dataset/subject/clip",
        ),
    ],
)
def test_pooled_scores_refuse_bad_joins(edit, message) -> None:
    labels, preds = _case()
    pr = list(preds.items())
    edit(labels, pr)
    with pytest.raises(InputError, match=message):
        pooled_scores(labels, pr, CLASSES)
