"""Protocols as folds: no fold of any protocol shares a subject between test and train or
validation, on random sample sets and on the full composite."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from edge_mer.calibration.datasets import ProtocolError, build_megc2019, make_folds
from edge_mer.calibration.datasets.protocols import PROTOCOLS, Fold


@dataclass(frozen=True)
class S:
    dataset: str
    subject: str
    clip: str

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.subject}/{self.clip}"

    @property
    def subject_key(self) -> str:
        return f"{self.dataset}/{self.subject}"


def random_samples(rng: random.Random) -> list[S]:
    out = []
    for dataset in ("casme2", "samm", "smic-hs")[: rng.randint(2, 3)]:
        for k in range(rng.randint(2, 9)):
            # subject names that collide across datasets on purpose ("01" in two datasets)
            out += [S(dataset, f"{k + 1:02d}", f"c{j}") for j in range(rng.randint(1, 4))]
    rng.shuffle(out)
    return out


def kwargs_for(kind: str, samples: list[S]) -> dict:
    names = sorted({s.dataset for s in samples})
    if kind == "loso":
        return {"dataset": names[0]}
    if kind == "cross":
        return {"train": names[0], "test": names[1:]}
    return {}


def check_fold(fold: Fold, samples: list[S]) -> None:
    subject_of = {s.id: s.subject_key for s in samples}
    test = set(fold.test_subjects)
    assert test and fold.test and fold.train
    assert not test & set(fold.train_subjects)
    assert not test & set(fold.validation_subjects)
    assert not set(fold.train_subjects) & set(fold.validation_subjects)
    for ids, subjects in (
        (fold.train, fold.train_subjects),
        (fold.validation, fold.validation_subjects),
        (fold.test, fold.test_subjects),
    ):
        assert {subject_of[i] for i in ids} == set(subjects)


@pytest.mark.parametrize("kind", [k for k in PROTOCOLS if k != "megc2019"] + ["megc2019"])
def test_no_test_subject_in_train_or_validation(kind) -> None:
    rng = random.Random(kind)
    for trial in range(60):
        samples = random_samples(rng)
        folds = make_folds(
            kind,
            samples,
            **kwargs_for(kind, samples),
            val_fraction=rng.choice([0, 0.2, 0.5]),
            seed=trial,
        )
        assert folds
        for fold in folds:
            check_fold(fold, samples)
        if kind in ("loso", "megc2019", "leave-one-dataset-out"):
            # every sample of the protocol is tested exactly once
            tested = [i for f in folds for i in f.test]
            scope = [
                s.id
                for s in samples
                if kind != "loso" or s.dataset == kwargs_for(kind, samples)["dataset"]
            ]
            assert sorted(tested) == sorted(scope)


def test_validation_is_deterministic_and_from_training_subjects() -> None:
    samples = random_samples(random.Random(3))
    a = make_folds("megc2019", samples, seed=1)
    assert a == make_folds("megc2019", list(reversed(samples)), seed=1)
    b = make_folds("megc2019", samples, seed=2)
    assert any(x.validation_subjects != y.validation_subjects for x, y in zip(a, b, strict=True))
    for fold in a:  # drawn per dataset: every dataset with >= 2 training subjects has one
        pool = {k.split("/")[0] for k in fold.train_subjects + fold.validation_subjects}
        assert {k.split("/")[0] for k in fold.validation_subjects} <= pool
    assert all(f.validation == () for f in make_folds("megc2019", samples, val_fraction=0))


def test_cross_and_lodo_folds() -> None:
    samples = [
        S(d, f"{k:02d}", "c") for d in ("casme2", "smic-hs", "smic-vis") for k in range(1, 5)
    ]
    folds = make_folds("cross", samples, train="casme2", test=["smic-hs", "smic-vis"])
    assert [f.id for f in folds] == ["casme2->smic-hs", "casme2->smic-vis"]
    assert folds[0].slug == "casme2_to_smic-hs" and folds[0].as_dict()["slug"] == folds[0].slug
    assert all(k.startswith("casme2/") for f in folds for k in f.train_subjects)
    assert folds[0].test_subjects == ("smic-hs/01", "smic-hs/02", "smic-hs/03", "smic-hs/04")
    lodo = make_folds("leave-one-dataset-out", samples, seed=0)
    assert [f.id for f in lodo] == ["casme2", "smic-hs", "smic-vis"]
    assert lodo[0].as_dict()["test"] == ["casme2/01/c", "casme2/02/c", "casme2/03/c", "casme2/04/c"]


def test_megc2019_on_the_composite(roots) -> None:
    comp = build_megc2019(roots["casme2"], roots["samm"], roots["smic-hs"])
    folds = make_folds("megc2019", comp.samples, seed=0)
    assert len(folds) == 68
    assert len({f.slug for f in folds}) == 68 and folds[0].slug == "casme2_01"
    assert sum(len(f.test) for f in folds) == 442
    for fold in folds:
        check_fold(fold, comp.samples)  # Labelled samples carry the same keys


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("loso", {"dataset": "samm"}, "no samples of dataset 'samm'"),
        ("cross", {"train": "casme2", "test": "smic-nir"}, "test set would be empty"),
        ("cross", {"train": "samm", "test": "casme2"}, "training dataset 'samm'"),
        ("cross", {"train": "casme2"}, "needs train= and test="),
        ("cross", {"train": "casme2", "test": []}, "no test dataset"),
        ("cross", {"train": "casme2", "test": "casme2"}, "is the training dataset"),
        ("leave-one-dataset-out", {}, "at least two datasets"),
        ("holdout", {}, "no protocol 'holdout'"),
        ("loso", {"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_refused_protocols(kind, kwargs, message) -> None:
    samples = [S("casme2", f"{k:02d}", "c") for k in range(1, 4)]
    with pytest.raises(ProtocolError, match=message):
        make_folds(kind, samples, **kwargs)


def test_one_subject_leaves_no_training_set() -> None:
    with pytest.raises(ProtocolError, match="no training subjects"):
        make_folds("loso", [S("casme2", "01", "a"), S("casme2", "01", "b")])
    with pytest.raises(ProtocolError, match="appears more than once"):
        make_folds("loso", [S("casme2", "01", "a"), S("casme2", "01", "a")])
    with pytest.raises(ProtocolError, match="not part of the composite"):
        make_folds("megc2019", [S("casme3", "spNO.1", "a"), S("casme2", "01", "a")])
